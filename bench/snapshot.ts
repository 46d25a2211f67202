// Snapshot benchmark: what restoring and forking a snapshot buys over booting, in one run.
// Run it with `npm run --silent bench:snapshot` (add `-- --samples N` and friends, see --help).
//
//   1  cold boot to first command:  startMachine({ name }) then execute('true'), timed from the call;
//   2  restore to first command:    restoreMachine(snapshot) then execute('true'), from a snapshot
//                                   taken once of a booted machine (machine.snapshot() is timed too,
//                                   and its RAM pass, sparseDigest(), on its own);
//   3  restore from a warm pool:    snapshot.pool({ size: 1 }); once its clone is restored and
//                                   waiting, pool.take() then execute('true');
//                                   1, 2 and 3 alternate (1, 2, 3, 1, 2, 3, ...) so load weighs on
//                                   all alike; the pool's clone waits (idle) during 1 and 2, and its
//                                   refill is let finish before the next sample starts;
//   4  fork to all ready:           snapshot.fork(N) until every clone answered execute('true');
//   5  memory per clone:            /proc/<pid>/smaps_rollup of every clone (Rss, Pss, private), and
//                                   from /proc/<pid>/smaps the Private_Dirty of the snapshot RAM file
//                                   mapping (the guest pages that clone wrote); the cold boots of 1
//                                   are measured the same way, for comparison;
//   6  a test suite:                boot-per-test (N x startMachine + body + close) against vmkit's
//                                   suite runner, runTest() with `tests`: a first run (fresh: boot +
//                                   setup + snapshot + N tests on clones), then a cached run of the
//                                   same definition (the setup snapshot is reused).
//
// Progress goes to stderr, one JSON object to stdout. Every machine is closed and every snapshot
// this run took is deleted at the end, on error and on SIGINT/SIGTERM.

import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  defineTest,
  listSnapshots,
  type Machine,
  type RestoreOptions,
  type RestorePool,
  RunLog,
  type RunReport,
  removeSnapshot,
  restoreMachine,
  runTest,
  type Snapshot,
  startMachine,
  type TestDefinition,
} from 'vmkit';
// Not part of vmkit's API: the one-pass sparse copy + digest machine.snapshot() runs on guest RAM.
import { sparseDigest } from '../src/util/sparse.js';
import {
  adoptMachine,
  BOOT_TIMEOUT_MS,
  CPUS,
  closeMachine,
  describeEnvironment,
  environment,
  hostCpus,
  loadAverages,
  log,
  MEMORY_MIB,
  median,
  onCleanup,
  parseIntOptions,
  ratio,
  round,
  runBenchmark,
  sum,
} from './lib.js';

const USAGE = `Usage: npm run --silent bench:snapshot -- [options]   (--silent keeps npm's banner off stdout)
       node --import tsx bench/snapshot.ts [options]            (after npm run build)

Measures, on the tiny image: cold boot to first command against restore to first command and
against restore from a warm pool (alternating), machine.snapshot(), fork of N clones to all
ready, memory per clone against a cold-booted machine, and a test suite run boot-per-test
against vmkit's suite runner (first run and cached run).
Progress on stderr, JSON on stdout.

Options:
  --samples N       measured cold-boot/restore/pooled-restore triples (default 5)
  --warmup N        unmeasured triples before measuring (default 1)
  --fork N          clones forked at once (default 8)
  --suite-tests N   tests in each suite (default 10)
  -h, --help        print this help
`;

/** Bounds a stalled command instead of letting it wait out vmkit's two-minute default. */
const COMMAND_TIMEOUT_MS = 30_000;
/**
 * How long the pool is given to restore its next clone after a take() (or after it was made),
 * at least: sampling waits this long, so the clone taken is waiting and the refill is not
 * competing with the next sample. Raised to twice the slowest plain restore seen when that is longer.
 */
const POOL_REFILL_MS = 2_000;
/** A take() slower than this did not find a clone waiting. */
const TAKE_IMMEDIATE_MS = 50;

const TARGETS = {
  restoreOverColdBoot: {
    max: 0.05,
    what: 'plain restore: restoreToFirstCommand / coldBootToFirstCommand <= 0.05',
  },
  pooledRestoreOverColdBoot: {
    max: 0.05,
    what: 'restore from a warm pool: pooledRestoreToFirstCommand / coldBootToFirstCommand <= 0.05',
  },
  forkOverColdBoot: { below: 1, what: 'forkAllReady / coldBootToFirstCommand < 1' },
  bootSuiteOverForkSuiteFirstRun: {
    min: 8,
    what: 'suite first run (boot + setup + snapshot + tests): bootPerTestSuite / forkPerTestFirstRun >= 8',
  },
  bootSuiteOverForkSuiteCachedRun: {
    min: 8,
    what: 'suite cached run (setup snapshot reused): bootPerTestSuite / forkPerTestCachedRun >= 8',
  },
} as const;

// ---------------------------------------------------------------------------------------------
// Cleanup of what only this benchmark makes: snapshots until deleted, pools until closed
// (machines are closed by lib.ts).

const snapshotDirs = new Set<string>();
const pools = new Set<RestorePool>();
/** Set while a suite runs: its snapshots are the store's entries named <slug>.<machine>-<hash>. */
let suiteSnapshots: { root: string; slug: string } | undefined;

onCleanup(() => {
  // Stops the clones waiting in pools (vmkit's exit handler kills their QEMUs at exit anyway).
  for (const pool of pools) void pool.close();
  for (const dir of snapshotDirs) rmSync(dir, { recursive: true, force: true });
  snapshotDirs.clear();
  if (suiteSnapshots) {
    const { root, slug } = suiteSnapshots;
    for (const entry of readdirSync(root)) {
      if (entry.startsWith(`${slug}.`)) rmSync(join(root, entry), { recursive: true, force: true });
    }
  }
});

async function closePools(): Promise<void> {
  await Promise.allSettled([...pools].map((pool) => pool.close()));
  pools.clear();
}

function track(snapshot: Snapshot): Snapshot {
  snapshotDirs.add(snapshot.dir);
  return snapshot;
}

function dropSnapshot(snapshot: Snapshot): void {
  rmSync(snapshot.dir, { recursive: true, force: true });
  snapshotDirs.delete(snapshot.dir);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Runs `true` and insists it worked; returns the round trip. */
async function firstCommand(machine: Machine): Promise<number> {
  const began = performance.now();
  const result = await machine.execute('true');
  if (result.exitCode !== 0) {
    throw new Error(`${machine.name}: execute('true') exited ${result.exitCode}: ${result.stderr}`);
  }
  return performance.now() - began;
}

/**
 * CPU time QEMU has used so far (user + system, ms), from /proc/<pid>/stat. Under TCG this is
 * where the guest's work shows: a busy guest is a busy QEMU.
 */
function qemuCpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  // utime and stime are fields 14 and 15 of the line, in clock ticks (USER_HZ, 100 on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const machineOptions = { image: 'tiny', memoryMiB: MEMORY_MIB, cpus: CPUS, accel: 'auto' } as const;
const timeouts = { timeoutMs: BOOT_TIMEOUT_MS, commandTimeoutMs: COMMAND_TIMEOUT_MS } as const;

async function boot(name: string): Promise<Machine> {
  return adoptMachine(await startMachine({ name, ...machineOptions, ...timeouts }));
}

const restoreOptions: RestoreOptions = { ...timeouts };

async function restore(snapshot: Snapshot, name: string): Promise<Machine> {
  return adoptMachine(await restoreMachine(snapshot, { ...restoreOptions, name }));
}

// ---------------------------------------------------------------------------------------------
// Memory of one QEMU process, from /proc

interface Memory {
  /** smaps_rollup, MiB. */
  rssMiB: number;
  pssMiB: number;
  /** Private_Clean + Private_Dirty: pages no other process maps. */
  privateMiB: number;
  /** Private_Dirty of the guest-RAM file mapping: guest pages this process wrote (MiB). */
  ramPrivateDirtyMiB: number;
  /** Rss of the guest-RAM file mapping (MiB). */
  ramRssMiB: number;
  /** privateMiB - ramPrivateDirtyMiB: QEMU's own private memory (TCG code buffer, heap), MiB. */
  qemuPrivateMiB: number;
  /** The mapping's path as /proc shows it. */
  ramMapping: string;
}

const mib = (kib: number) => Math.round((kib / 1024) * 10) / 10;

function smapsFields(text: string): Map<string, number> {
  const fields = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (match?.[1] && match[2]) fields.set(match[1], (fields.get(match[1]) ?? 0) + Number(match[2]));
  }
  return fields;
}

/**
 * Reads one QEMU's memory. `isRam` picks the guest-RAM mapping(s) by the path /proc shows for them.
 */
async function measureMemory(pid: number, isRam: (path: string) => boolean): Promise<Memory> {
  const rollup = smapsFields(await readFile(`/proc/${pid}/smaps_rollup`, 'utf8'));
  const smaps = await readFile(`/proc/${pid}/smaps`, 'utf8');
  // Each mapping: a header "start-end perms offset dev inode [path]", then "Key: N kB" lines.
  const header = /^[0-9a-f]+-[0-9a-f]+ \S+ [0-9a-f]+ \S+ \d+\s*(.*)$/;
  let inRam = false;
  let ramPath = '';
  const ramLines: string[] = [];
  for (const line of smaps.split('\n')) {
    const match = header.exec(line);
    if (match) {
      const path = match[1] ?? '';
      inRam = path !== '' && isRam(path);
      if (inRam) ramPath = path;
    } else if (inRam) {
      ramLines.push(line);
    }
  }
  if (!ramPath) throw new Error(`QEMU pid ${pid}: no guest-RAM file mapping found in /proc/${pid}/smaps`);
  const ram = smapsFields(ramLines.join('\n'));
  return {
    rssMiB: mib(rollup.get('Rss') ?? 0),
    pssMiB: mib(rollup.get('Pss') ?? 0),
    privateMiB: mib((rollup.get('Private_Clean') ?? 0) + (rollup.get('Private_Dirty') ?? 0)),
    ramPrivateDirtyMiB: mib(ram.get('Private_Dirty') ?? 0),
    ramRssMiB: mib(ram.get('Rss') ?? 0),
    qemuPrivateMiB: mib(
      (rollup.get('Private_Clean') ?? 0) +
        (rollup.get('Private_Dirty') ?? 0) -
        (ram.get('Private_Dirty') ?? 0),
    ),
    ramMapping: ramPath,
  };
}

/** A clone maps `${snapshot.dir}/ram` copy-on-write. */
function snapshotRamMatcher(snapshot: Snapshot): (path: string) => boolean {
  const file = join(snapshot.dir, 'ram');
  const names = new Set([file, realpathSync(file)]);
  return (path) => names.has(path.replace(/ \(deleted\)$/, ''));
}

/** A booted machine maps its own RAM file, vmkit-<our pid>-<name>-<hex>.ram, unlinked once mapped. */
function bootedRamMatcher(name: string): (path: string) => boolean {
  const pattern = new RegExp(`/vmkit-${process.pid}-${name}-[0-9a-f]+\\.ram( \\(deleted\\))?$`);
  return (path) => pattern.test(path);
}

function memorySummary(samples: Memory[]) {
  return {
    rssMiB: median(samples.map((m) => m.rssMiB)),
    pssMiB: median(samples.map((m) => m.pssMiB)),
    privateMiB: median(samples.map((m) => m.privateMiB)),
    ramPrivateDirtyMiB: median(samples.map((m) => m.ramPrivateDirtyMiB)),
    ramRssMiB: median(samples.map((m) => m.ramRssMiB)),
    qemuPrivateMiB: median(samples.map((m) => m.qemuPrivateMiB)),
  };
}

function memoryTotals(samples: Memory[]) {
  return {
    rssMiB: sum(samples.map((m) => m.rssMiB)),
    pssMiB: sum(samples.map((m) => m.pssMiB)),
    privateMiB: sum(samples.map((m) => m.privateMiB)),
    ramPrivateDirtyMiB: sum(samples.map((m) => m.ramPrivateDirtyMiB)),
  };
}

/**
 * The RAM pass of machine.snapshot() on its own, redone on the finished snapshot's RAM file:
 * sparseDigest() copying the non-zero blocks to a new sparse file in the snapshot store while
 * digesting them (vmkit reads the running machine's RAM file in /dev/shm; this reads the
 * snapshot's copy, just written and so in the page cache). Then the digest alone, which is what
 * the first restore of a snapshot in a process costs to verify its RAM file.
 */
async function snapshotCostEstimates(snapshot: Snapshot) {
  const ram = join(snapshot.dir, 'ram');
  const copy = join(snapshot.dir, `ram.bench-copy-${process.pid}`);
  let t = performance.now();
  let copied: Awaited<ReturnType<typeof sparseDigest>>;
  try {
    copied = await sparseDigest(ram, copy);
  } finally {
    await rm(copy, { force: true });
  }
  const copyMs = round(performance.now() - t);
  t = performance.now();
  const digested = await sparseDigest(ram);
  const digestMs = round(performance.now() - t);
  const recorded = snapshot.manifest.files.ram?.digest;
  return {
    ramBytes: copied.bytes,
    /** Bytes in non-zero 4 KiB blocks: what the pass copies and digests. */
    ramDataBytes: copied.dataBytes,
    ramSparseCopyAndDigestMs: copyMs,
    ramDigestMs: digestMs,
    /** Both passes gave the digest recorded in the manifest. */
    digestMatchesManifest: copied.digest === recorded && digested.digest === recorded,
  };
}

// ---------------------------------------------------------------------------------------------
// 1 and 2: cold boot and restore to first command

interface ColdSample {
  /** startMachine() call to execute('true') answered. */
  totalMs: number;
  /** startMachine() call to resolved. */
  startMs: number;
  /** vmkit's own figure: launch until the backdoor answered. */
  readyMs: number;
  firstCommandMs: number;
  /** CPU time QEMU used from its start until the first command was answered. */
  qemuCpuMs: number;
  closeMs: number;
  memory: Memory;
}

async function coldSample(name: string): Promise<ColdSample> {
  const began = performance.now();
  const machine = await boot(name);
  const startMs = performance.now() - began;
  try {
    const firstCommandMs = await firstCommand(machine);
    const totalMs = performance.now() - began;
    const cpuMs = qemuCpuMs(machine.pid);
    const memory = await measureMemory(machine.pid, bootedRamMatcher(name));
    return {
      totalMs: round(totalMs),
      startMs: round(startMs),
      readyMs: machine.readyMs,
      firstCommandMs: round(firstCommandMs),
      qemuCpuMs: cpuMs,
      closeMs: await closeMachine(machine),
      memory,
    };
  } finally {
    await closeMachine(machine);
  }
}

interface RestoreSample {
  /** restoreMachine() call to execute('true') answered. */
  totalMs: number;
  /** restoreMachine() call to resolved (checks, QEMU start, state load, setup script). */
  restoreMs: number;
  /** vmkit's own figure: launch until the backdoor answered (QEMU start + state load). */
  readyMs: number;
  /**
   * restoreMs - readyMs: from the backdoor answering until restoreMachine() resolved, which is
   * vmkit's setup script (clock, hostname, entropy): the first guest work after the restore.
   */
  setupMs: number;
  firstCommandMs: number;
  /** CPU time QEMU used from its start until the first command was answered. */
  qemuCpuMs: number;
  closeMs: number;
}

async function restoreSample(snapshot: Snapshot, name: string): Promise<RestoreSample> {
  const began = performance.now();
  const machine = await restore(snapshot, name);
  const restoreMs = performance.now() - began;
  try {
    const firstCommandMs = await firstCommand(machine);
    const totalMs = performance.now() - began;
    return {
      totalMs: round(totalMs),
      restoreMs: round(restoreMs),
      readyMs: machine.readyMs,
      setupMs: round(restoreMs - machine.readyMs),
      firstCommandMs: round(firstCommandMs),
      qemuCpuMs: qemuCpuMs(machine.pid),
      closeMs: await closeMachine(machine),
    };
  } finally {
    await closeMachine(machine);
  }
}

// ---------------------------------------------------------------------------------------------
// 3: restore from a warm pool

interface PooledSample {
  /** pool.take() call to execute('true') answered. */
  totalMs: number;
  /** pool.take() call to resolved: about 0 when a clone was waiting. */
  takeMs: number;
  firstCommandMs: number;
  /** The clone's own restore: launch until the backdoor answered (paid before the take). */
  readyMs: number;
  /** Since the pool was made or last taken from, when this take() was called. */
  waitedMs: number;
  /** CPU time the clone's QEMU used before it was taken: its restore, then waiting idle. */
  qemuCpuBeforeTakeMs: number;
  /** CPU time the clone's QEMU used for the first command. */
  qemuCpuFirstCommandMs: number;
  closeMs: number;
}

/** A pool of one, and when it last started restoring a clone. */
class WarmPool {
  readonly pool: RestorePool;
  private refillStarted = performance.now();

  constructor(snapshot: Snapshot) {
    this.pool = snapshot.pool({ size: 1, prefix: 'bench-pool', ...restoreOptions });
    pools.add(this.pool);
  }

  /** Waits until at least `refillMs` passed since the pool last started restoring a clone. */
  async settle(refillMs: number): Promise<number> {
    const waited = performance.now() - this.refillStarted;
    if (waited < refillMs) await sleep(refillMs - waited);
    return performance.now() - this.refillStarted;
  }

  async sample(refillMs: number): Promise<PooledSample> {
    const waitedMs = await this.settle(refillMs);
    const began = performance.now();
    const machine = adoptMachine(await this.pool.take());
    this.refillStarted = performance.now();
    const takeMs = performance.now() - began;
    try {
      const cpuBefore = qemuCpuMs(machine.pid);
      const firstCommandMs = await firstCommand(machine);
      const totalMs = performance.now() - began;
      const cpuAfter = qemuCpuMs(machine.pid);
      return {
        totalMs: round(totalMs),
        takeMs: round(takeMs),
        firstCommandMs: round(firstCommandMs),
        readyMs: machine.readyMs,
        waitedMs: round(waitedMs),
        qemuCpuBeforeTakeMs: cpuBefore,
        qemuCpuFirstCommandMs: cpuAfter - cpuBefore,
        closeMs: await closeMachine(machine),
      };
    } finally {
      await closeMachine(machine);
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
    pools.delete(this.pool);
  }
}

// ---------------------------------------------------------------------------------------------
// 4 and 5: fork, then memory of every clone

async function forkRun(snapshot: Snapshot, count: number) {
  const began = performance.now();
  const nodeCpu = process.cpuUsage();
  const clones = await snapshot.fork(count, restoreOptions);
  for (const clone of clones) adoptMachine(clone);
  const forkedMs = performance.now() - began;
  try {
    const firstCommands = await Promise.all(clones.map((clone) => firstCommand(clone)));
    const allReadyMs = performance.now() - began;
    const nodeUsed = process.cpuUsage(nodeCpu);
    const cloneCpuMs = clones.map((clone) => qemuCpuMs(clone.pid));
    log(
      `fork of ${count}: all answered after ${round(allReadyMs)} ms (fork() resolved at ${round(forkedMs)} ms)`,
    );
    const isRam = snapshotRamMatcher(snapshot);
    const memory: Memory[] = [];
    for (const clone of clones) memory.push(await measureMemory(clone.pid, isRam));
    // An ordinary round trip on a settled clone, to tell the first command's cost apart.
    const roundTrips: number[] = [];
    for (let i = 0; i < 5; i++) roundTrips.push(await firstCommand(clones[0] as Machine));
    const closing = performance.now();
    await Promise.all(clones.map((clone) => closeMachine(clone)));
    return {
      allReadyMs: round(allReadyMs),
      forkResolvedMs: round(forkedMs),
      cloneReadyMs: clones.map((clone) => clone.readyMs),
      firstCommandMs: firstCommands.map(round),
      qemuCpuMs: cloneCpuMs,
      qemuCpuTotalMs: sum(cloneCpuMs),
      benchProcessCpuMs: round((nodeUsed.user + nodeUsed.system) / 1000),
      settledRoundTripMs: median(roundTrips),
      closeAllMs: round(performance.now() - closing),
      memory,
    };
  } finally {
    await Promise.allSettled(clones.map((clone) => closeMachine(clone)));
  }
}

// ---------------------------------------------------------------------------------------------
// 6: a test suite, boot-per-test against vmkit's suite runner

/** The body of each test: write a file, read it back. */
async function testBody(machine: Machine, index: number): Promise<void> {
  const text = `test ${index} on ${machine.name}`;
  await machine.succeed(`mkdir -p /srv/t && echo '${text}' > /srv/t/file`);
  const read = await machine.succeed('cat /srv/t/file');
  if (read !== `${text}\n`) throw new Error(`${machine.name}: read back ${JSON.stringify(read)}`);
}

async function bootPerTestSuite(tests: number) {
  const perTest: number[] = [];
  const began = performance.now();
  for (let i = 0; i < tests; i++) {
    const t = performance.now();
    const machine = await boot(`bench-suite-b${i}`);
    try {
      await testBody(machine, i);
    } finally {
      await closeMachine(machine);
    }
    perTest.push(round(performance.now() - t));
  }
  const totalMs = round(performance.now() - began);
  log(`boot-per-test suite: ${tests} tests in ${totalMs} ms`);
  return { totalMs, perTestMs: perTest, medianTestMs: median(perTest) };
}

/**
 * A suite for runTest(): one machine with a small setup, `tests` tests with the body above. Its
 * name is unique to this run, so its setup snapshot is never one an earlier run left, and it
 * is already the slug vmkit names the snapshot after (<slug>.box-<hash>).
 */
function suiteDefinition(name: string, tests: number): TestDefinition<'box'> {
  if (!/^[a-z0-9][a-z0-9_.-]{0,29}$/.test(name)) throw new Error(`suite name ${name} is not its own slug`);
  const bodies: NonNullable<TestDefinition<'box'>['tests']> = {};
  for (let i = 0; i < tests; i++) bodies[`test ${i}`] = ({ box }) => testBody(box, i);
  return defineTest({
    name,
    machines: {
      box: {
        ...machineOptions,
        ...timeouts,
        setup: async (box) => {
          await box.succeed("mkdir -p /srv/t && echo 'set up' > /srv/t/setup");
        },
      },
    },
    tests: bodies,
  });
}

/** The suite's snapshots in the store, by the name vmkit gives them. */
async function suiteSnapshotsIn(slug: string): Promise<Snapshot[]> {
  return (await listSnapshots()).filter((snapshot) => snapshot.manifest.name.startsWith(`${slug}.`));
}

/** One runTest() of the suite, timed; fails loudly (with the run's log) unless every test passed. */
async function runSuite(definition: TestDefinition<'box'>, fresh: boolean) {
  const lines: string[] = [];
  const began = performance.now();
  const report: RunReport = await runTest(definition, {
    ...(fresh ? { fresh: true } : {}),
    log: new RunLog((line) => lines.push(line)),
  });
  const totalMs = round(performance.now() - began);
  const which = fresh ? 'first run' : 'cached run';
  if (!report.passed) {
    throw new Error(
      `suite ${which} failed (${report.failedStep}): ${report.error?.message ?? 'no error given'}\n` +
        `its log:\n${lines.join('\n')}`,
    );
  }
  const perTest = (report.tests ?? []).map((test) => test.durationMs);
  const taken = lines.join('\n').match(/setup snapshots taken after (\d+) ms/);
  const reused = lines.some((line) => line.includes('reusing setup snapshots'));
  log(`fork-per-test suite, ${which}: ${perTest.length} tests passed in ${totalMs} ms`);
  return {
    totalMs,
    reportDurationMs: report.durationMs,
    /** From the run's log: booting, setting up and snapshotting the machine (first run). */
    setupSnapshotMs: taken ? Number(taken[1]) : null,
    reusedSetupSnapshot: reused,
    perTestMs: perTest,
    medianTestMs: median(perTest),
  };
}

/**
 * The suite through runTest(), as users run it: first with `fresh` (boots, sets up, snapshots),
 * then again as it was defined (reuses that snapshot). Removes the suite's snapshots afterwards.
 */
async function forkPerTestSuites(tests: number, root: string) {
  const name = `bench-suite-${randomBytes(4).toString('hex')}`;
  const definition = suiteDefinition(name, tests);
  suiteSnapshots = { root, slug: name };
  try {
    const firstRun = await runSuite(definition, true);
    const taken = await suiteSnapshotsIn(name);
    if (taken.length !== 1) {
      throw new Error(`the suite's first run left ${taken.length} setup snapshots named ${name}.*, not 1`);
    }
    const snapshot = taken[0] as Snapshot;
    const cachedRun = await runSuite(definition, false);
    const after = await suiteSnapshotsIn(name);
    const sameSnapshot =
      after.length === 1 &&
      after[0]?.id === snapshot.id &&
      after[0]?.manifest.createdAt === snapshot.manifest.createdAt;
    if (!cachedRun.reusedSetupSnapshot || !sameSnapshot) {
      throw new Error(`the suite's cached run did not reuse setup snapshot ${snapshot.id}`);
    }
    return { name, snapshotId: snapshot.id, firstRun, cachedRun };
  } finally {
    for (const snapshot of await suiteSnapshotsIn(name)) await removeSnapshot(snapshot);
    suiteSnapshots = undefined;
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const options = parseIntOptions(USAGE, {
    samples: { default: 5 },
    warmup: { default: 1, min: 0 },
    fork: { default: 8 },
    'suite-tests': { default: 10 },
  });
  if (!options) return;
  const { samples, warmup, fork: forkCount, 'suite-tests': suiteTests } = options;

  const benchStarted = performance.now();
  const date = new Date().toISOString();
  const loadBefore = loadAverages();
  const env = await environment();

  // The snapshot every restore, the pool and the fork start from, taken once of a booted machine.
  log('booting the template machine and taking its snapshot');
  const template = await boot('bench-tpl');
  let snapshot: Snapshot;
  let snapshotMs: number;
  try {
    await firstCommand(template);
    const t = performance.now();
    snapshot = track(await template.snapshot());
    snapshotMs = round(performance.now() - t);
  } finally {
    await closeMachine(template);
  }
  const snapshotFiles = Object.fromEntries(
    Object.entries(snapshot.manifest.files).map(([file, record]) => {
      // The RAM file is sparse: pages the guest never touched take no room on disk.
      const allocated = statSync(join(snapshot.dir, file)).blocks * 512;
      return [file, { bytes: record.bytes, allocatedBytes: allocated }];
    }),
  );
  log(`snapshot ${snapshot.id}: ${snapshotMs} ms; files ${JSON.stringify(snapshotFiles)}`);
  const costEstimates = await snapshotCostEstimates(snapshot);
  log(`snapshot RAM pass on its own: ${JSON.stringify(costEstimates)}`);

  // 1, 2 and 3, alternating.
  log(
    `${warmup} warm-up triple(s), then ${samples} measured triple(s), alternating cold boot, restore ` +
      'and restore from a warm pool',
  );
  const cold: ColdSample[] = [];
  const restored: RestoreSample[] = [];
  const pooled: PooledSample[] = [];
  const pool = new WarmPool(snapshot);
  let refillMs = POOL_REFILL_MS;
  try {
    for (let i = 0; i < warmup + samples; i++) {
      const measured = i >= warmup;
      const label = measured ? `triple ${i - warmup + 1}/${samples}` : `warm-up ${i + 1}/${warmup}`;
      const a = await coldSample(`bench-cold-${i}`);
      log(
        `${label} cold boot: ${a.totalMs} ms to first command (start ${a.startMs}, ready ${a.readyMs}, ` +
          `command ${a.firstCommandMs}; QEMU CPU ${a.qemuCpuMs}), close ${a.closeMs} ms`,
      );
      const b = await restoreSample(snapshot, `bench-restore-${i}`);
      log(
        `${label} restore:   ${b.totalMs} ms to first command (ready ${b.readyMs}, setup ${b.setupMs}, ` +
          `command ${b.firstCommandMs}; QEMU CPU ${b.qemuCpuMs}), close ${b.closeMs} ms`,
      );
      refillMs = Math.max(refillMs, 2 * b.restoreMs);
      const c = await pool.sample(refillMs);
      log(
        `${label} pooled:    ${c.totalMs} ms to first command (take ${c.takeMs}, command ${c.firstCommandMs}; ` +
          `restored in ${c.readyMs} ms, waited ${c.waitedMs} ms using ${c.qemuCpuBeforeTakeMs} ms QEMU CPU), ` +
          `close ${c.closeMs} ms` +
          (c.takeMs > TAKE_IMMEDIATE_MS ? '; NOT READY: take() waited for the restore' : ''),
      );
      // The pool restores the next clone now: let that finish before the next cold boot.
      await pool.settle(refillMs);
      if (measured) {
        cold.push(a);
        restored.push(b);
        pooled.push(c);
      }
    }
  } finally {
    await pool.close();
  }

  // 4 and 5.
  log(`forking ${forkCount} clones`);
  const fork = await forkRun(snapshot, forkCount);
  const snapshotRoot = dirname(snapshot.dir);
  dropSnapshot(snapshot);

  // 6.
  log(`suites of ${suiteTests} tests: boot-per-test, then runTest() fresh, then runTest() cached`);
  const bootSuite = await bootPerTestSuite(suiteTests);
  const forkSuite = await forkPerTestSuites(suiteTests, snapshotRoot);

  const coldMs = median(cold.map((s) => s.totalMs));
  const restoreMs = median(restored.map((s) => s.totalMs));
  const pooledMs = median(pooled.map((s) => s.totalMs));
  const coldMemory = memorySummary(cold.map((s) => s.memory));
  const cloneMemory = memorySummary(fork.memory);
  const cloneTotals = memoryTotals(fork.memory);

  const restoreRatio = ratio(restoreMs, coldMs);
  const pooledRatio = ratio(pooledMs, coldMs);
  const forkRatio = ratio(fork.allReadyMs, coldMs);
  const suiteFirstRatio = ratio(bootSuite.totalMs, forkSuite.firstRun.totalMs);
  const suiteCachedRatio = ratio(bootSuite.totalMs, forkSuite.cachedRun.totalMs);

  const report = {
    benchmark: 'snapshot',
    date,
    ...describeEnvironment(env),
    host: {
      cpus: hostCpus(),
      loadavgBefore: loadBefore,
      loadavgAfter: loadAverages(),
      node: process.version,
    },
    memoryMiB: MEMORY_MIB,
    cpus: CPUS,
    samples,
    warmupPairs: warmup,
    snapshot: {
      what:
        'machine.snapshot() of a booted, idle machine (pause, save device state, sparse copy + digest ' +
        'of the RAM file in one pass, digest of the state file)',
      ms: snapshotMs,
      files: snapshotFiles,
      costEstimates: {
        what:
          "sparseDigest() on the snapshot's RAM file: copying (to the snapshot store) and digesting in one " +
          'pass, as machine.snapshot() does; then digesting alone, as the first restore of a snapshot in a ' +
          'process does to verify it',
        ...costEstimates,
      },
      totalBytes: Object.values(snapshotFiles).reduce((total, f) => total + f.bytes, 0),
    },
    coldBoot: {
      what: "startMachine({ name }) call until execute('true') answered",
      samplesMs: cold.map((s) => s.totalMs),
      medianMs: coldMs,
      startSamplesMs: cold.map((s) => s.startMs),
      readySamplesMs: cold.map((s) => s.readyMs),
      firstCommandSamplesMs: cold.map((s) => s.firstCommandMs),
      qemuCpuSamplesMs: cold.map((s) => s.qemuCpuMs),
      closeSamplesMs: cold.map((s) => s.closeMs),
    },
    restore: {
      what: "restoreMachine(snapshot) call until execute('true') answered",
      samplesMs: restored.map((s) => s.totalMs),
      medianMs: restoreMs,
      restoreSamplesMs: restored.map((s) => s.restoreMs),
      readySamplesMs: restored.map((s) => s.readyMs),
      setupSamplesMs: restored.map((s) => s.setupMs),
      firstCommandSamplesMs: restored.map((s) => s.firstCommandMs),
      qemuCpuSamplesMs: restored.map((s) => s.qemuCpuMs),
      phasesMedianMs: {
        launchAndLoadState: median(restored.map((s) => s.readyMs)),
        setupScript: median(restored.map((s) => s.setupMs)),
        firstCommand: median(restored.map((s) => s.firstCommandMs)),
      },
      closeSamplesMs: restored.map((s) => s.closeMs),
    },
    pooledRestore: {
      what:
        "snapshot.pool({ size: 1 }) with its clone restored and waiting: pool.take() call until execute('true') " +
        `answered; each take() at least ${POOL_REFILL_MS} ms (or twice the slowest plain restore) after the ` +
        'previous one, and the refill let finish before the next sample',
      samplesMs: pooled.map((s) => s.totalMs),
      medianMs: pooledMs,
      takeSamplesMs: pooled.map((s) => s.takeMs),
      /** Takes that had to wait for a restore (over TAKE_IMMEDIATE_MS): the pool was not ready. */
      takesNotImmediate: pooled.filter((s) => s.takeMs > TAKE_IMMEDIATE_MS).length,
      firstCommandSamplesMs: pooled.map((s) => s.firstCommandMs),
      cloneReadySamplesMs: pooled.map((s) => s.readyMs),
      waitedSamplesMs: pooled.map((s) => s.waitedMs),
      qemuCpuBeforeTakeSamplesMs: pooled.map((s) => s.qemuCpuBeforeTakeMs),
      qemuCpuFirstCommandSamplesMs: pooled.map((s) => s.qemuCpuFirstCommandMs),
      closeSamplesMs: pooled.map((s) => s.closeMs),
    },
    fork: {
      what: `snapshot.fork(${forkCount}) call until every clone answered execute('true')`,
      count: forkCount,
      allReadyMs: fork.allReadyMs,
      forkResolvedMs: fork.forkResolvedMs,
      cloneReadyMs: fork.cloneReadyMs,
      firstCommandMs: fork.firstCommandMs,
      qemuCpuMs: fork.qemuCpuMs,
      qemuCpuTotalMs: fork.qemuCpuTotalMs,
      benchProcessCpuMs: fork.benchProcessCpuMs,
      settledRoundTripMs: fork.settledRoundTripMs,
      closeAllMs: fork.closeAllMs,
    },
    memory: {
      what:
        'per QEMU process right after its first command: smaps_rollup Rss, Pss, Private_Clean+Private_Dirty; ' +
        'ram* = the guest-RAM file mapping in smaps (clones: the snapshot RAM file, copy-on-write; ' +
        'cold boots: their own shared RAM file), Private_Dirty = guest pages written by that process',
      perCloneMedian: cloneMemory,
      coldBootMedian: coldMemory,
      clones: fork.memory,
      sumOfClones: cloneTotals,
      coldBootTimesCount: {
        rssMiB: round(coldMemory.rssMiB * forkCount),
        pssMiB: round(coldMemory.pssMiB * forkCount),
        privateMiB: round(coldMemory.privateMiB * forkCount),
        ramPrivateDirtyMiB: round(coldMemory.ramPrivateDirtyMiB * forkCount),
      },
      pssRatio: ratio(cloneTotals.pssMiB, coldMemory.pssMiB * forkCount),
    },
    suite: {
      tests: suiteTests,
      body: 'write a file, read it back (two succeed() calls)',
      name: forkSuite.name,
      bootPerTest: { what: 'N x (startMachine + body + close); no setup', ...bootSuite },
      forkPerTestFirstRun: {
        what:
          'runTest(defineTest({ machines: { box: { setup } }, tests }), { fresh: true }): boot + setup (one ' +
          "succeed()) + snapshot, then N tests each on a fresh clone (the next test's clone restored while a " +
          'test runs); wall time of the call',
        snapshotId: forkSuite.snapshotId,
        ...forkSuite.firstRun,
      },
      forkPerTestCachedRun: {
        what:
          'the same definition again, runTest() without fresh: the cached setup snapshot is reused, then N ' +
          "tests on clones. In this process that snapshot's RAM file was verified when it was taken; a new " +
          'process verifies it once more on its first restore (snapshot.costEstimates.ramDigestMs for a RAM ' +
          'file like it)',
        ...forkSuite.cachedRun,
      },
    },
    ratios: {
      restoreToFirstCommandOverColdBoot: restoreRatio,
      pooledRestoreToFirstCommandOverColdBoot: pooledRatio,
      forkAllReadyOverColdBoot: forkRatio,
      bootPerTestSuiteOverForkPerTestFirstRun: suiteFirstRatio,
      bootPerTestSuiteOverForkPerTestCachedRun: suiteCachedRatio,
    },
    targets: {
      restoreOverColdBoot: {
        target: TARGETS.restoreOverColdBoot.what,
        value: restoreRatio,
        met: restoreRatio <= TARGETS.restoreOverColdBoot.max,
      },
      pooledRestoreOverColdBoot: {
        target: TARGETS.pooledRestoreOverColdBoot.what,
        value: pooledRatio,
        met: pooledRatio <= TARGETS.pooledRestoreOverColdBoot.max,
      },
      forkOverColdBoot: {
        target: TARGETS.forkOverColdBoot.what.replace('fork', `fork${forkCount}`),
        value: forkRatio,
        met: forkRatio < TARGETS.forkOverColdBoot.below,
      },
      bootSuiteOverForkSuiteFirstRun: {
        target: TARGETS.bootSuiteOverForkSuiteFirstRun.what,
        value: suiteFirstRatio,
        met: suiteFirstRatio >= TARGETS.bootSuiteOverForkSuiteFirstRun.min,
      },
      bootSuiteOverForkSuiteCachedRun: {
        target: TARGETS.bootSuiteOverForkSuiteCachedRun.what,
        value: suiteCachedRatio,
        met: suiteCachedRatio >= TARGETS.bootSuiteOverForkSuiteCachedRun.min,
      },
    },
    benchmarkMs: round(performance.now() - benchStarted),
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
}

await runBenchmark(main, closePools);

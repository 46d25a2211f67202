// Snapshot benchmark: what restoring and forking a snapshot buys over booting, in one run.
// Run it with `npm run --silent bench:snapshot` (add `-- --samples N` and friends, see --help).
//
//   1  cold boot to first command:  startMachine({ name }) then execute('true'), timed from the call;
//   2  restore to first command:    restoreMachine(snapshot) then execute('true'), from a snapshot
//                                   taken once of a booted machine (machine.snapshot() is timed too);
//                                   1 and 2 alternate (1, 2, 1, 2, ...) so load weighs on both alike;
//   3  fork to all ready:           snapshot.fork(N) until every clone answered execute('true');
//   4  memory per clone:            /proc/<pid>/smaps_rollup of every clone (Rss, Pss, private), and
//                                   from /proc/<pid>/smaps the Private_Dirty of the snapshot RAM file
//                                   mapping (the guest pages that clone wrote); the cold boots of 1
//                                   are measured the same way, for comparison;
//   5  a test suite:                boot-per-test (N x startMachine + body + close) against
//                                   fork-per-test (1 boot + snapshot + N x restore + body + close).
//
// Progress goes to stderr, one JSON object to stdout. Every machine is closed and every snapshot
// this run took is deleted at the end, on error and on SIGINT/SIGTERM.

import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import {
  buildImage,
  chooseAccel,
  type Machine,
  type RestoreOptions,
  restoreMachine,
  type Snapshot,
  startMachine,
} from 'vmkit';

const USAGE = `Usage: npm run --silent bench:snapshot -- [options]   (--silent keeps npm's banner off stdout)
       node --import tsx bench/snapshot.ts [options]            (after npm run build)

Measures, on the tiny image: cold boot to first command against restore to first command
(alternating), machine.snapshot(), fork of N clones to all ready, memory per clone against a
cold-booted machine, and a test suite run boot-per-test against fork-per-test.
Progress on stderr, JSON on stdout.

Options:
  --samples N       measured cold-boot/restore pairs (default 5)
  --warmup N        unmeasured pairs before measuring (default 1)
  --fork N          clones forked at once (default 8)
  --suite-tests N   tests in each suite (default 10)
  -h, --help        print this help
`;

const MEMORY_MIB = 256;
const CPUS = 1;
const BOOT_TIMEOUT_MS = 180_000;
/** Bounds a stalled command instead of letting it wait out vmkit's two-minute default. */
const COMMAND_TIMEOUT_MS = 30_000;

const TARGETS = {
  restoreOverColdBoot: { max: 0.05, what: 'restoreToFirstCommand / coldBootToFirstCommand <= 0.05' },
  forkOverColdBoot: { below: 1, what: 'forkAllReady / coldBootToFirstCommand < 1' },
  bootSuiteOverForkSuite: { min: 8, what: 'bootPerTestSuite / forkPerTestSuite >= 8' },
} as const;

const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

// ---------------------------------------------------------------------------------------------
// Cleanup: machines until closed, snapshots until deleted.

const openMachines = new Set<Machine>();
const snapshotDirs = new Set<string>();

function removeSnapshots(): void {
  for (const dir of snapshotDirs) rmSync(dir, { recursive: true, force: true });
  snapshotDirs.clear();
}

// Synchronous last resort (uncaught errors, process.exit): vmkit kills its own machines at exit.
process.on('exit', removeSnapshots);

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping every machine this benchmark started`);
    // Closing kills each machine's QEMU; vmkit's exit handler would do it too.
    for (const machine of openMachines) void machine.close();
    removeSnapshots();
    process.exit(signal === 'SIGINT' ? 130 : signal === 'SIGTERM' ? 143 : 129);
  });
}

async function close(machine: Machine): Promise<number> {
  const began = performance.now();
  try {
    await machine.close();
  } finally {
    openMachines.delete(machine);
  }
  return round(performance.now() - began);
}

async function closeAll(): Promise<void> {
  await Promise.allSettled([...openMachines].map((machine) => close(machine)));
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

/** Bad command-line use: reported in one line with a pointer to --help, no stack. */
class UsageError extends Error {}

function positiveInt(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    throw new UsageError(`--${name} must be a whole number of at least ${min}, not ${JSON.stringify(value)}`);
  }
  return n;
}

const round = (ms: number) => Math.round(ms * 10) / 10;
const ratio = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;
const sum = (values: number[]) => round(values.reduce((total, value) => total + value, 0));

function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const value = sorted.length % 2 === 1 ? sorted[mid] : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
  return round(value ?? Number.NaN);
}

async function qemuVersion(): Promise<string> {
  const { stdout } = await promisify(execFile)(process.env.VMKIT_QEMU || 'qemu-system-x86_64', ['--version']);
  return stdout.split('\n')[0]?.trim() ?? '';
}

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

async function boot(name: string): Promise<Machine> {
  const machine = await startMachine({
    name,
    ...machineOptions,
    timeoutMs: BOOT_TIMEOUT_MS,
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
  });
  openMachines.add(machine);
  return machine;
}

const restoreOptions: RestoreOptions = { timeoutMs: BOOT_TIMEOUT_MS, commandTimeoutMs: COMMAND_TIMEOUT_MS };

async function restore(snapshot: Snapshot, name: string): Promise<Machine> {
  const machine = await restoreMachine(snapshot, { ...restoreOptions, name });
  openMachines.add(machine);
  return machine;
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
 * What two steps of machine.snapshot() cost on their own, redone on the finished snapshot's RAM
 * file: the sparse copy of guest RAM (vmkit copies from the running machine's RAM file in
 * /dev/shm; this copies the snapshot's into /dev/shm) and the SHA-256 of it for the manifest.
 */
async function snapshotCostEstimates(snapshot: Snapshot) {
  const ram = join(snapshot.dir, 'ram');
  const copy = `/dev/shm/vmkit-bench-${process.pid}.ram`;
  let t = performance.now();
  try {
    execFileSync('cp', ['--sparse=always', ram, copy]);
  } finally {
    rmSync(copy, { force: true });
  }
  const sparseCopyMs = round(performance.now() - t);
  t = performance.now();
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(ram, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  hash.digest();
  return { ramSparseCopyMs: sparseCopyMs, ramSha256Ms: round(performance.now() - t) };
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
      readyMs: machine.bootMs,
      firstCommandMs: round(firstCommandMs),
      qemuCpuMs: cpuMs,
      closeMs: await close(machine),
      memory,
    };
  } finally {
    await close(machine);
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
      readyMs: machine.bootMs,
      setupMs: round(restoreMs - machine.bootMs),
      firstCommandMs: round(firstCommandMs),
      qemuCpuMs: qemuCpuMs(machine.pid),
      closeMs: await close(machine),
    };
  } finally {
    await close(machine);
  }
}

// ---------------------------------------------------------------------------------------------
// 3 and 4: fork, then memory of every clone

async function forkRun(snapshot: Snapshot, count: number) {
  const began = performance.now();
  const nodeCpu = process.cpuUsage();
  const clones = await snapshot.fork(count, restoreOptions);
  for (const clone of clones) openMachines.add(clone);
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
    await Promise.all(clones.map((clone) => close(clone)));
    return {
      allReadyMs: round(allReadyMs),
      forkResolvedMs: round(forkedMs),
      cloneReadyMs: clones.map((clone) => clone.bootMs),
      firstCommandMs: firstCommands.map(round),
      qemuCpuMs: cloneCpuMs,
      qemuCpuTotalMs: sum(cloneCpuMs),
      benchProcessCpuMs: round((nodeUsed.user + nodeUsed.system) / 1000),
      settledRoundTripMs: median(roundTrips),
      closeAllMs: round(performance.now() - closing),
      memory,
    };
  } finally {
    await Promise.allSettled(clones.map((clone) => close(clone)));
  }
}

// ---------------------------------------------------------------------------------------------
// 5: a test suite, boot-per-test against fork-per-test

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
      await close(machine);
    }
    perTest.push(round(performance.now() - t));
  }
  const totalMs = round(performance.now() - began);
  log(`boot-per-test suite: ${tests} tests in ${totalMs} ms`);
  return { totalMs, perTestMs: perTest, medianTestMs: median(perTest) };
}

async function forkPerTestSuite(tests: number) {
  const began = performance.now();
  const template = await boot('bench-suite-tpl');
  let snapshot: Snapshot;
  let snapshotMs: number;
  try {
    await firstCommand(template);
    const bootMs = performance.now() - began;
    const t = performance.now();
    snapshot = track(await template.snapshot(undefined, { stop: true }));
    snapshotMs = performance.now() - t;
    await close(template);
    const setupMs = performance.now() - began;
    const perTest: number[] = [];
    try {
      for (let i = 0; i < tests; i++) {
        const t = performance.now();
        const machine = await restore(snapshot, `bench-suite-f${i}`);
        try {
          await testBody(machine, i);
        } finally {
          await close(machine);
        }
        perTest.push(round(performance.now() - t));
      }
      const totalMs = round(performance.now() - began);
      log(`fork-per-test suite: ${tests} tests in ${totalMs} ms (boot + snapshot ${round(setupMs)} ms)`);
      return {
        totalMs,
        templateBootMs: round(bootMs),
        snapshotMs: round(snapshotMs),
        setupMs: round(setupMs),
        perTestMs: perTest,
        medianTestMs: median(perTest),
      };
    } finally {
      dropSnapshot(snapshot);
    }
  } finally {
    await close(template);
  }
}

// ---------------------------------------------------------------------------------------------

function parseOptions() {
  return parseArgs({
    options: {
      samples: { type: 'string' },
      warmup: { type: 'string' },
      fork: { type: 'string' },
      'suite-tests': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
}

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions();
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const samples = positiveInt('samples', values.samples, 5);
  const warmup = positiveInt('warmup', values.warmup, 1, 0);
  const forkCount = positiveInt('fork', values.fork, 8);
  const suiteTests = positiveInt('suite-tests', values['suite-tests'], 10);

  const benchStarted = performance.now();
  const date = new Date().toISOString();
  const loadBefore = loadavg().map((l) => Math.round(l * 100) / 100);
  const version = await qemuVersion();
  const image = await buildImage('tiny', { onProgress: log });
  const accel = await chooseAccel('auto');
  log(`${version}; ${accel.accel.toUpperCase()}: ${accel.reason}`);
  log(`image ${image.name} ${image.key.slice(0, 12)} (kernel ${image.kernelRelease})`);

  // The snapshot every restore and the fork start from, taken once of a booted machine.
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
    await close(template);
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
  log(`snapshot cost estimates: ${JSON.stringify(costEstimates)}`);

  // 1 and 2, alternating.
  log(`${warmup} warm-up pair(s), then ${samples} measured pair(s), alternating cold boot and restore`);
  const cold: ColdSample[] = [];
  const restored: RestoreSample[] = [];
  for (let i = 0; i < warmup + samples; i++) {
    const measured = i >= warmup;
    const label = measured ? `pair ${i - warmup + 1}/${samples}` : `warm-up ${i + 1}/${warmup}`;
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
    if (measured) {
      cold.push(a);
      restored.push(b);
    }
  }

  // 3 and 4.
  log(`forking ${forkCount} clones`);
  const fork = await forkRun(snapshot, forkCount);
  dropSnapshot(snapshot);

  // 5.
  log(`suites of ${suiteTests} tests: boot-per-test, then fork-per-test`);
  const bootSuite = await bootPerTestSuite(suiteTests);
  const forkSuite = await forkPerTestSuite(suiteTests);

  const coldMs = median(cold.map((s) => s.totalMs));
  const restoreMs = median(restored.map((s) => s.totalMs));
  const coldMemory = memorySummary(cold.map((s) => s.memory));
  const cloneMemory = memorySummary(fork.memory);
  const cloneTotals = memoryTotals(fork.memory);

  const restoreRatio = ratio(restoreMs, coldMs);
  const forkRatio = ratio(fork.allReadyMs, coldMs);
  const suiteRatio = ratio(bootSuite.totalMs, forkSuite.totalMs);

  const report = {
    benchmark: 'snapshot',
    date,
    image: image.name,
    imageKey: image.key,
    kernelRelease: image.kernelRelease,
    qemuVersion: version,
    accel: accel.accel,
    accelReason: accel.reason,
    host: {
      cpus: cpus().length,
      loadavgBefore: loadBefore,
      loadavgAfter: loadavg().map((l) => Math.round(l * 100) / 100),
      node: process.version,
    },
    memoryMiB: MEMORY_MIB,
    cpus: CPUS,
    samples,
    warmupPairs: warmup,
    snapshot: {
      what: 'machine.snapshot() of a booted, idle machine (pause, save device state, copy RAM file, checksum)',
      ms: snapshotMs,
      files: snapshotFiles,
      costEstimates,
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
      bootPerTest: { what: 'N x (startMachine + body + close)', ...bootSuite },
      forkPerTest: {
        what: '1 boot + snapshot + close, then N x (restoreMachine + body + close)',
        ...forkSuite,
      },
    },
    ratios: {
      restoreToFirstCommandOverColdBoot: restoreRatio,
      forkAllReadyOverColdBoot: forkRatio,
      bootPerTestSuiteOverForkPerTestSuite: suiteRatio,
      /** Informational: the fork suite without its one-off boot + snapshot (a snapshot reused from the store). */
      bootPerTestSuiteOverForkRestoresOnly: ratio(bootSuite.totalMs, forkSuite.totalMs - forkSuite.setupMs),
    },
    targets: {
      restoreOverColdBoot: {
        target: TARGETS.restoreOverColdBoot.what,
        value: restoreRatio,
        met: restoreRatio <= TARGETS.restoreOverColdBoot.max,
      },
      forkOverColdBoot: {
        target: TARGETS.forkOverColdBoot.what.replace('fork', `fork${forkCount}`),
        value: forkRatio,
        met: forkRatio < TARGETS.forkOverColdBoot.below,
      },
      bootSuiteOverForkSuite: {
        target: TARGETS.bootSuiteOverForkSuite.what,
        value: suiteRatio,
        met: suiteRatio >= TARGETS.bootSuiteOverForkSuite.min,
      },
    },
    benchmarkMs: round(performance.now() - benchStarted),
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
}

try {
  await main();
} catch (error) {
  if (error instanceof UsageError) {
    process.stderr.write(`bench: ${error.message} (see --help)\n`);
    process.exitCode = 2;
  } else {
    log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exitCode = 1;
  }
} finally {
  await closeAll();
  removeSnapshots();
}

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
//                                   same definition (the setup snapshot is reused), then a first
//                                   run of a suite like it with the boot cache warm (its machine
//                                   restored, not booted). Cold boots here are fresh: true.
//
// Progress goes to stderr, one JSON object to stdout. Every machine is closed and every snapshot
// this run took is deleted at the end, on error and on SIGINT/SIGTERM.
//
// Each measurement lives in bench/snapshot/: cost.ts (the snapshot and its cost), restore.ts (1, 2
// and 3), fork.ts (4), memory.ts (5), suite.ts (6); common.ts holds what they share.

import { dirname } from 'node:path';
import {
  CPUS,
  describeEnvironment,
  environment,
  hostCpus,
  loadAverages,
  log,
  MEMORY_MIB,
  median,
  parseIntOptions,
  ratio,
  round,
  runBenchmark,
} from './lib.js';
import { closePools, dropSnapshot } from './snapshot/common.js';
import { snapshotCostEstimates, templateSnapshot } from './snapshot/cost.js';
import { forkRun } from './snapshot/fork.js';
import { memorySummary, memoryTotals } from './snapshot/memory.js';
import { alternatingSamples, POOL_REFILL_MS, TAKE_IMMEDIATE_MS } from './snapshot/restore.js';
import { bootPerTestSuite, forkPerTestSuites } from './snapshot/suite.js';

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
  const { snapshot, snapshotMs, snapshotFiles } = await templateSnapshot();
  const costEstimates = await snapshotCostEstimates(snapshot);
  log(`snapshot RAM pass on its own: ${JSON.stringify(costEstimates)}`);

  // 1, 2 and 3, alternating.
  const { cold, restored, pooled } = await alternatingSamples(snapshot, warmup, samples);

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
  const suiteWarmFirstRatio = ratio(bootSuite.totalMs, forkSuite.warmFirstRun.totalMs);

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
        /** The agent's identity request (clock, hostname, entropy); a script only for NICs or hosts lines. */
        setUp: median(restored.map((s) => s.setupMs)),
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
      forkPerTestFirstRunBootCacheWarm: {
        what:
          'a first run of a suite like it (no setup snapshot yet) without fresh: its machine is restored from ' +
          'the boot cache instead of booted, then set up, snapshotted and N tests on clones',
        ...forkSuite.warmFirstRun,
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
      bootPerTestSuiteOverForkPerTestFirstRunBootCacheWarm: suiteWarmFirstRatio,
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

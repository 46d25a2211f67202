// Measurement 6: a test suite, boot-per-test (N x startMachine + body + close) against vmkit's
// suite runner, runTest() with `tests`: a first run (fresh: boot + setup + snapshot + N tests on
// clones), then a cached run of the same definition (the setup snapshot is reused).

import { randomBytes } from 'node:crypto';
import {
  defineTest,
  listSnapshots,
  type Machine,
  RunLog,
  type RunReport,
  removeSnapshot,
  runTest,
  type Snapshot,
  type TestDefinition,
} from 'vmkit';
import { closeMachine, log, median, round } from '../lib.js';
import { boot, machineOptions, timeouts, trackSuiteSnapshots } from './common.js';

/** The body of each test: write a file, read it back. */
async function testBody(machine: Machine, index: number): Promise<void> {
  const text = `test ${index} on ${machine.name}`;
  await machine.succeed(`mkdir -p /srv/t && echo '${text}' > /srv/t/file`);
  const read = await machine.succeed('cat /srv/t/file');
  if (read !== `${text}\n`) throw new Error(`${machine.name}: read back ${JSON.stringify(read)}`);
}

export async function bootPerTestSuite(tests: number) {
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
export async function forkPerTestSuites(tests: number, root: string) {
  const name = `bench-suite-${randomBytes(4).toString('hex')}`;
  const definition = suiteDefinition(name, tests);
  trackSuiteSnapshots({ root, slug: name });
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
    // A first run again (a suite of another name: no setup snapshot of its own yet), now with the
    // boot cache warm: its one machine is restored from the boot cache instead of booted.
    const warmName = `${name}-w`;
    trackSuiteSnapshots({ root, slug: warmName });
    const warmFirstRun = await runSuite(suiteDefinition(warmName, tests), false);
    for (const snapshot of await suiteSnapshotsIn(warmName)) await removeSnapshot(snapshot);
    return { name, snapshotId: snapshot.id, firstRun, warmFirstRun, cachedRun };
  } finally {
    for (const snapshot of await suiteSnapshotsIn(name)) await removeSnapshot(snapshot);
    trackSuiteSnapshots(undefined);
  }
}

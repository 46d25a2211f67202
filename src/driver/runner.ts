import { join } from 'node:path';
import { z } from 'zod';
import type { AccelRequest } from '../backends/accel.js';
import type { Backend } from '../backends/backend.js';
import { ConfigError, TestRunError, TimeoutError } from '../errors.js';
import type { Machine } from '../machine/machine.js';
import { commonMachineFields, declaredMachineFields } from '../machine/options.js';
import { startMachine } from '../machines.js';
import { Runtime } from '../runtime/runtime.js';
import { warmUp } from '../snapshot/warm-up.js';
import { RunLog } from '../util/log.js';
import { elapsedMs, withTimeout } from '../util/time.js';
import { callback, instanceOf, parseInput, timeoutMs } from '../util/validate.js';
import { testContext } from './context.js';
import { asTestDefinition, type TestBody, type TestContext, type TestDefinition } from './definition.js';
import { attachments, planLan } from './lan.js';
import { lateMachine } from './late.js';
import type { PollingConditions } from './polling.js';
import { RunRecorder } from './recorder.js';
import { Resources, startAll, withoutDriverFields } from './resources.js';
import { selectTests } from './selection.js';
import type { ShardSpec, Timings } from './shard.js';
import { logConsoleTails, recordStep } from './steps.js';
import { prepareSuiteSnapshots } from './suite-snapshots.js';

export type { MachineDeclaration, TestBody, TestContext, TestDefinition } from './definition.js';
export { asTestDefinition, defineTest } from './definition.js';
export { recordStep } from './steps.js';

const runOptions = z
  .object({
    keep: z.boolean().optional(),
    accel: commonMachineFields.accel,
    backend: declaredMachineFields.backend,
    console: z.boolean().optional(),
    verbose: z.boolean().optional(),
    log: instanceOf(RunLog, 'RunLog'),
    timeoutMs: timeoutMs.optional(),
    fresh: z.boolean().optional(),
    grep: instanceOf(RegExp, 'RegExp').optional(),
    shard: z
      .object({ index: z.number().int().min(1), count: z.number().int().min(1) })
      .strict()
      .optional(),
    timings: z.record(z.string(), z.number().nonnegative()).optional(),
    captureDir: z.string().min(1).optional(),
    runtime: commonMachineFields.runtime,
    outputDir: z.string({ error: 'must be a folder path' }).min(1).optional(),
    junit: z.string({ error: 'must be a file path' }).min(1).optional(),
    reportDir: z.string({ error: 'must be a folder path' }).min(1).optional(),
    recorder: instanceOf(RunRecorder, 'RunRecorder').optional(),
    onFailure: callback.optional(),
  })
  .partial()
  .strict();

export interface RunOptions {
  keep?: boolean;
  accel?: AccelRequest;
  /** Runs every machine on this backend, whatever it declares (`vmkit run --backend mock`). */
  backend?: string | Backend;
  /** Stream every machine's console, and every command's output, to the log. */
  console?: boolean;
  /** Log every command, its output as it comes, and how it ended. */
  verbose?: boolean;
  log?: RunLog;
  /** Overrides the test's own global timeout. */
  timeoutMs?: number;
  /** Take setup snapshots again even when cached ones match. */
  fresh?: boolean;
  /** With `tests`: run only the tests whose names match. */
  grep?: RegExp;
  /** With `tests`: run only this shard of them (after `grep`); see `partition` in shard.ts. */
  shard?: ShardSpec;
  /** With `shard`: recorded durations by test name, to balance the shards by time instead of count. */
  timings?: Timings;
  /**
   * Write every VLAN's traffic to a pcap file in this folder (which must exist):
   * `vlan<n>.pcap`, or `<test>.vlan<n>.pcap` for each test of a suite.
   */
  captureDir?: string;
  /** The runtime the run's machines live in; by default a new one, closed when the run ends. */
  runtime?: Runtime;
  /** Where reports, copies and diagnostics go (`ctx.outputDir`); by default `output/` in the run folder. */
  outputDir?: string;
  /** Write JUnit XML here at the end of the run. */
  junit?: string;
  /** Write a self-contained `report.html` into this folder at the end of the run. */
  reportDir?: string;
  /** The run's recorder, made beforehand (the CLI makes one to report an interrupted run). */
  recorder?: RunRecorder;
  /** Called on a failure while the failed test's machines still run (`--debug-on-failure`). */
  onFailure?: (machines: Machine[], error: Error) => Promise<void>;
}

export interface TestResult {
  name: string;
  passed: boolean;
  durationMs: number;
  error?: Error;
}

export interface RunReport {
  passed: boolean;
  durationMs: number;
  failedStep?: string;
  error?: Error;
  stateDir?: string;
  /** With `tests`: one result per test. */
  tests?: TestResult[];
}

/**
 * Runs a test script. With `test`: boots its machines in parallel, runs each machine's setup,
 * then the test. With `tests`: boots and sets up once, snapshots, and runs every test on fresh
 * clones. Every machine and switch is stopped at the end, whatever happens.
 */
export async function runTest(definition: TestDefinition, options: RunOptions = {}): Promise<RunReport> {
  asTestDefinition(definition, definition?.name ?? 'runTest');
  options = { ...options, ...parseInput(runOptions, options, 'runTest options') } as RunOptions;
  if (options.shard && !definition.tests)
    throw new ConfigError(
      `shards split the tests of a suite (tests: {...}); ${definition.name ?? 'this script'} has one test`,
    );
  const log = options.log ?? new RunLog();
  const started = performance.now();
  const timeoutMs = options.timeoutMs ?? definition.timeoutMs ?? 600_000;
  const runtime = options.runtime ?? new Runtime({ keep: options.keep });
  if (options.keep) runtime.setKeep(true);
  const runDir = runtime.runDir;
  const resources = new Resources(runtime, { captureDir: options.captureDir, log });
  const state = { step: 'starting machines' };
  const title = definition.name ?? 'test';
  const recorder =
    options.recorder ??
    (await RunRecorder.create(options.outputDir ?? join(runDir, 'output'), title, {
      junit: options.junit,
      reportDir: options.reportDir,
    }));
  options = { ...options, outputDir: recorder.outputDir, recorder };
  resources.ledger = recorder.ledger;
  const tap = (source: string, message: string) => {
    if (source.endsWith(':con')) return; // the console log is recorded whole
    const machine = source === 'vmkit' || source === 'test' ? {} : { machine: source };
    recorder.ledger.record({ kind: 'log', name: message, ...machine });
  };
  log.taps.add(tap);
  let outcome: 'ok' | 'failed' = 'failed';

  try {
    const run = definition.tests
      ? runSuite(definition, definition.tests, options, log, resources, state)
      : runSingle(definition, definition.test as TestBody, options, log, resources, state);
    run.catch(() => {}); // after a timeout it is abandoned: its resources are closed under it
    const tests = await withTimeout(run, timeoutMs, 'the test', {
      onTimeout: () =>
        new TestRunError(`the test exceeded its global timeout of ${timeoutMs} ms (during: ${state.step})`),
    });
    const failed = tests?.filter((test) => !test.passed) ?? [];
    const durationMs = elapsedMs(started);
    if (tests) log.line('vmkit', `${tests.length - failed.length} passed, ${failed.length} failed`);
    if (failed.length > 0) {
      log.line(
        'vmkit',
        `FAILED in ${(durationMs / 1000).toFixed(1)} s: ${failed.map((test) => test.name).join(', ')}`,
      );
      const first = failed[0];
      return {
        passed: false,
        durationMs,
        failedStep: `test "${first?.name}"`,
        error: first?.error,
        tests,
        stateDir: runtime.keep ? runDir : undefined,
      };
    }
    log.line('vmkit', `passed in ${(durationMs / 1000).toFixed(1)} s`);
    outcome = 'ok';
    return { passed: true, durationMs, tests };
  } catch (error) {
    const durationMs = elapsedMs(started);
    const err = error instanceof Error ? error : new Error(String(error));
    log.line('vmkit', `FAILED during ${state.step} after ${(durationMs / 1000).toFixed(1)} s`);
    log.line('vmkit', `${err.name}: ${err.message}`);
    logConsoleTails(log, [...resources.machines], err);
    await recorder.failure(state.step, err, [...resources.machines]);
    await options.onFailure?.([...resources.machines], err);
    return {
      passed: false,
      durationMs,
      failedStep: state.step,
      error: err,
      stateDir: runtime.keep ? runDir : undefined,
    };
  } finally {
    await resources.closeAll();
    log.taps.delete(tap);
    await recorder.finish(outcome, elapsedMs(started), log);
    if (!options.runtime) await runtime.close();
    if (runtime.keep) log.line('vmkit', `state kept in ${runDir}`);
  }
}

/** One test on freshly booted machines. Returns undefined: the caller reports a single test. */
async function runSingle(
  definition: TestDefinition,
  body: TestBody,
  options: RunOptions,
  log: RunLog,
  resources: Resources,
  state: { step: string },
): Promise<undefined> {
  const names = Object.keys(definition.machines);
  const lan = planLan(definition.machines);
  const switches = await resources.createSwitches(lan.vlans, '');
  const startNow = names.filter((name) => definition.machines[name]?.start !== false);
  const boot = async (name: string) => {
    const machine = await resources.track(
      startMachine({
        ...withoutDriverFields(definition.machines[name] ?? {}),
        ...(options.accel ? { accel: options.accel } : {}),
        ...(options.backend ? { backend: options.backend } : {}),
        ...(options.fresh ? { fresh: true } : {}),
        name,
        hosts: lan.hosts,
        log: log.for(name),
        signal: resources.aborter.signal,
        runtime: resources.runtime,
        networks: attachments(lan, names, name, switches, true),
      }).then((machine) => resources.adopt(machine, log, options)),
    );
    return machine;
  };
  log.line(
    'vmkit',
    `starting ${startNow.length} machine${startNow.length === 1 ? '' : 's'}: ${startNow.join(', ')}`,
  );
  const started = performance.now();
  const machines = await startAll(startNow, boot);
  log.line('vmkit', `all machines up after ${elapsedMs(started)} ms`);
  for (const name of startNow) {
    const setup = definition.machines[name]?.setup;
    if (!setup) continue;
    state.step = `setup of ${name}`;
    await recordStep(options.recorder, { kind: 'setup', machine: name, name: `setup of ${name}` }, () =>
      setup(machines[name] as Machine),
    );
  }
  let conditions: PollingConditions | undefined;
  for (const name of names.filter((name) => !startNow.includes(name))) {
    machines[name] = lateMachine(name, async () => {
      log.line('vmkit', `starting ${name} (declared with start: false)`);
      const machine = await boot(name);
      conditions?.watch(machine);
      await definition.machines[name]?.setup?.(machine);
      return machine;
    });
  }
  state.step = 'test';
  const made = testContext(
    log,
    state,
    switches,
    machines,
    options.outputDir as string,
    options.recorder?.ledger,
  );
  conditions = made.conditions;
  try {
    await body({ ...machines, ...made.context } as Record<string, Machine> & TestContext);
  } finally {
    made.conditions.close();
  }
  return undefined;
}

/** Several tests, each on its own clones; the next test's clones start while a test runs. */
async function runSuite(
  definition: TestDefinition,
  tests: Record<string, TestBody>,
  options: RunOptions,
  log: RunLog,
  resources: Resources,
  state: { step: string },
): Promise<TestResult[]> {
  const entries = selectTests(definition.name ?? 'test', tests, options, log);
  if (entries.length === 0) return [];
  const names = Object.keys(definition.machines);
  const late = names.find((name) => definition.machines[name]?.start === false);
  if (late) throw new ConfigError(`machine ${late}: start: false is for a single test (test), not for tests`);
  const lan = planLan(definition.machines);
  state.step = 'preparing setup snapshots';
  const snapshots = await prepareSuiteSnapshots(definition, lan, {
    fresh: options.fresh,
    accel: options.accel,
    backend: options.backend,
    log,
    resources,
  });

  const cloneSet = async (index: number) => {
    const switches = await resources.createSwitches(lan.vlans, `t${index}`, `${entries[index]?.[0]}.`);
    try {
      const machines = await startAll(names, (name) =>
        resources.track(
          (snapshots[name] as NonNullable<(typeof snapshots)[string]>)
            .restore({
              name,
              log: log.for(name),
              signal: resources.aborter.signal,
              runtime: resources.runtime,
              networks: attachments(lan, names, name, switches, false),
            })
            .then((machine) => resources.adopt(machine, log, options, 'restore'))
            // Restored while the test before runs: its first process is paid then, not in the test.
            .then(warmUp),
        ),
      );
      return { machines, switches };
    } catch (error) {
      await resources.release([], switches.values());
      throw error;
    }
  };

  const results: TestResult[] = [];
  let next = resources.track(cloneSet(0));
  next.catch(() => {});
  for (const [index, [testName, body]] of entries.entries()) {
    state.step = `test "${testName}"`;
    const started = performance.now();
    const ledger = options.recorder?.ledger;
    if (ledger) ledger.currentTest = testName;
    log.line('test', `${testName}`);
    let set: Awaited<ReturnType<typeof cloneSet>> | undefined;
    try {
      set = await next;
      if (index + 1 < entries.length) {
        next = resources.track(cloneSet(index + 1));
        next.catch(() => {});
      }
      const made = testContext(
        log,
        state,
        set.switches,
        set.machines,
        options.outputDir as string,
        options.recorder?.ledger,
      );
      const running = body({ ...set.machines, ...made.context } as Record<string, Machine> & TestContext);
      running.catch(() => {}); // after a timeout its clones are closed under it: that failure is expected
      running.finally(() => made.conditions.close()).catch(() => {});
      if (definition.testTimeoutMs)
        await withTimeout(running, definition.testTimeoutMs, `test "${testName}"`);
      else await running;
      const durationMs = elapsedMs(started);
      log.line('test', `${testName}: ok (${durationMs} ms)`);
      results.push({ name: testName, passed: true, durationMs });
      ledger?.record({ kind: 'test', name: testName, durationMs, outcome: 'ok' });
    } catch (error) {
      const err = error instanceof Error ? error : new Error(String(error));
      log.line('test', `${testName}: FAILED: ${err.name}: ${err.message}`);
      if (set) logConsoleTails(log, Object.values(set.machines), err);
      results.push({ name: testName, passed: false, durationMs: elapsedMs(started), error: err });
      await options.recorder?.failure(
        `test "${testName}"`,
        err,
        set ? Object.values(set.machines) : [],
        testName,
      );
      ledger?.record({
        kind: 'test',
        name: testName,
        durationMs: elapsedMs(started),
        outcome: err instanceof TimeoutError ? 'timeout' : 'failed',
        error: err.stack ?? err.message,
      });
      if (!set && index + 1 < entries.length) {
        next = resources.track(cloneSet(index + 1));
        next.catch(() => {});
      }
    } finally {
      if (set) await resources.release(Object.values(set.machines), set.switches.values());
      if (ledger) ledger.currentTest = undefined;
    }
  }
  return results;
}

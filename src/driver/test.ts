import { join } from 'node:path';
import { ConfigError, VmkitError } from '../errors.js';
import type { AccelRequest } from '../hypervisor/accel.js';
import { currentRunDir, reapStaleRuns } from '../hypervisor/processes.js';
import type { Machine } from '../machine/machine.js';
import type { MachineOptions } from '../machine/options.js';
import { keepMachineState, startMachine } from '../machine/start.js';
import { VirtualSwitch } from '../network/switch.js';
import { RunLog } from '../util/log.js';
import { elapsedMs } from '../util/time.js';

/** A machine as a test declares it; name, networks and hosts come from the test. */
export type MachineDeclaration = Omit<MachineOptions, 'name' | 'networks' | 'hosts' | 'log'> & {
  /** Virtual LANs the machine is on (default [1]); machine i gets 192.168.<vlan>.<i+1>. */
  vlans?: number[];
};

export interface TestContext {
  /** Writes a line to the test log. */
  log(message: string): void;
  /** Runs a named step; its name and duration are logged, and a failure names it. */
  subtest<T>(name: string, body: () => Promise<T>): Promise<T>;
}

export interface TestDefinition<M extends string = string> {
  name?: string;
  machines: Record<M, MachineDeclaration>;
  /** The whole run, boot included, must end within this time (default 10 minutes). */
  timeoutMs?: number;
  test(context: Record<M, Machine> & TestContext): Promise<void>;
}

const RESERVED = new Set(['log', 'subtest']);

/** Declares a test script: its machines and what to do with them. */
export function defineTest<M extends string>(definition: TestDefinition<M>): TestDefinition<M> {
  return definition;
}

export interface RunOptions {
  keep?: boolean;
  accel?: AccelRequest;
  /** Stream every machine's console to the log. */
  console?: boolean;
  log?: RunLog;
  /** Overrides the test's own global timeout. */
  timeoutMs?: number;
}

export interface RunReport {
  passed: boolean;
  durationMs: number;
  failedStep?: string;
  error?: Error;
  stateDir?: string;
}

/** Checks that a loaded module's default export is a test definition. */
export function asTestDefinition(value: unknown, source: string): TestDefinition {
  const candidate = value as Partial<TestDefinition> | undefined;
  if (!candidate || typeof candidate !== 'object' || typeof candidate.test !== 'function') {
    throw new ConfigError(
      `${source} must export default defineTest({ machines: {...}, async test(...) {...} })`,
    );
  }
  if (
    !candidate.machines ||
    typeof candidate.machines !== 'object' ||
    Object.keys(candidate.machines).length === 0
  ) {
    throw new ConfigError(`${source}: the test declares no machines`);
  }
  for (const name of Object.keys(candidate.machines)) {
    if (RESERVED.has(name))
      throw new ConfigError(`${source}: "${name}" is reserved and cannot name a machine`);
  }
  return candidate as TestDefinition;
}

/**
 * Runs a test: starts its machines in parallel on their VLANs, runs the test function, and
 * always stops every machine and switch, whatever happens.
 */
export async function runTest(definition: TestDefinition, options: RunOptions = {}): Promise<RunReport> {
  const log = options.log ?? new RunLog();
  const started = performance.now();
  const timeoutMs = options.timeoutMs ?? definition.timeoutMs ?? 600_000;
  const names = Object.keys(definition.machines);
  if (options.keep) keepMachineState(true);
  reapStaleRuns();
  const runDir = currentRunDir();

  const switches = new Map<number, VirtualSwitch>();
  const machines: Record<string, Machine> = {};
  let step = 'starting machines';
  const aborter = new AbortController();
  const starting: Promise<unknown>[] = [];
  let timer: NodeJS.Timeout | undefined;
  const globalTimeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new VmkitError(`the test exceeded its global timeout of ${timeoutMs} ms (during: ${step})`)),
      timeoutMs,
    );
  });
  globalTimeout.catch(() => {});

  const body = async () => {
    const vlansOf = (name: string) => definition.machines[name]?.vlans ?? [1];
    for (const vlan of new Set(names.flatMap(vlansOf))) {
      switches.set(vlan, await VirtualSwitch.create(`vlan${vlan}`, join(runDir, `vlan${vlan}.sock`)));
    }
    const hosts: Record<string, string> = {};
    names.forEach((name, index) => {
      const vlan = vlansOf(name)[0];
      if (vlan !== undefined) hosts[name] = `192.168.${vlan}.${index + 1}`;
    });
    log.line(
      'vmkit',
      `starting ${names.length} machine${names.length === 1 ? '' : 's'}: ${names.join(', ')}`,
    );
    const starts = names.map(async (name, index) => {
      const { vlans: _vlans, ...declared } = definition.machines[name] ?? {};
      const machine = await startMachine({
        ...declared,
        ...(options.accel ? { accel: options.accel } : {}),
        name,
        hosts,
        signal: aborter.signal,
        log: log.for(name),
        networks: vlansOf(name).map((vlan) => ({
          switch: switches.get(vlan) as VirtualSwitch,
          address: `192.168.${vlan}.${index + 1}/24`,
        })),
      });
      machines[name] = machine;
      if (options.console) machine.console.on('line', (line) => log.line(`${name}:con`, line));
    });
    starting.push(...starts);
    const results = await Promise.allSettled(starts);
    const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed) throw failed.reason;
    log.line('vmkit', `all machines up after ${elapsedMs(started)} ms`);

    step = 'test';
    const context: TestContext = {
      log: log.for('test'),
      subtest: async (name, run) => {
        const outer = step;
        step = `subtest "${name}"`;
        const subStarted = performance.now();
        log.line('test', `subtest ${name}`);
        const result = await run();
        log.line('test', `subtest ${name}: ok (${elapsedMs(subStarted)} ms)`);
        step = outer;
        return result;
      },
    };
    await definition.test({ ...machines, ...context } as Record<string, Machine> & TestContext);
  };

  try {
    await Promise.race([body(), globalTimeout]);
    const durationMs = elapsedMs(started);
    log.line('vmkit', `passed in ${(durationMs / 1000).toFixed(1)} s`);
    return { passed: true, durationMs };
  } catch (error) {
    const durationMs = elapsedMs(started);
    const err = error instanceof Error ? error : new Error(String(error));
    log.line('vmkit', `FAILED during ${step} after ${(durationMs / 1000).toFixed(1)} s`);
    log.line('vmkit', `${err.name}: ${err.message}`);
    for (const [name, machine] of Object.entries(machines)) {
      const consoleTail = machine.console.tail(1200).trimEnd();
      if (consoleTail && !err.message.includes(consoleTail.slice(-200))) {
        log.line('vmkit', `console tail of ${name}:\n${consoleTail}`);
      }
    }
    return {
      passed: false,
      durationMs,
      failedStep: step,
      error: err,
      stateDir: options.keep ? runDir : undefined,
    };
  } finally {
    clearTimeout(timer);
    aborter.abort();
    await Promise.allSettled(starting);
    await Promise.allSettled(Object.values(machines).map((machine) => machine.close()));
    await Promise.allSettled([...switches.values()].map((sw) => sw.close()));
    if (options.keep) log.line('vmkit', `state kept in ${runDir}`);
  }
}

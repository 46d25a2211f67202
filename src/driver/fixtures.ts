import { ConfigError } from '../errors.js';
import type { Machine } from '../machine/machine.js';
import type { MachineOptions } from '../machine/options.js';
import { startMachine } from '../machines.js';
import { Runtime } from '../runtime/runtime.js';

/** The hooks of a test framework: node:test's `before`/`after` (or `beforeEach`/`afterEach`), vitest's `beforeAll`/`afterAll`. */
export interface FixtureHooks {
  before: (fn: () => Promise<void>) => unknown;
  after: (fn: () => Promise<void>) => unknown;
}

/**
 * Machines for the tests of a file (or of each test, given per-test hooks): started in parallel
 * by `before`, closed by `after` whatever happened (their own Runtime is closed, so nothing is
 * left running even when a start failed halfway). The returned object holds the machines by
 * name once `before` has run.
 */
export function useMachines<M extends string>(
  hooks: FixtureHooks,
  machines: Record<M, Omit<MachineOptions, 'name' | 'runtime'>>,
): Record<M, Machine> {
  let runtime: Runtime | undefined;
  const started = new Map<string, Machine>();
  hooks.before(async () => {
    runtime = new Runtime();
    const active = runtime;
    const results = await Promise.allSettled(
      Object.entries(machines).map(async ([name, options]) => {
        started.set(name, await startMachine({ ...(options as object), name, runtime: active }));
      }),
    );
    const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed) throw failed.reason;
  });
  hooks.after(async () => {
    started.clear();
    await runtime?.close();
    runtime = undefined;
  });
  return new Proxy({} as Record<M, Machine>, {
    get(_target, property) {
      if (typeof property !== 'string' || property === 'then') return undefined;
      const machine = started.get(property);
      if (machine) return machine;
      if (!(property in machines)) throw new ConfigError(`useMachines: no machine named ${property}`);
      throw new ConfigError(
        `useMachines: machine ${property} is not started: use it inside a test, after the before hook`,
      );
    },
  });
}

import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { IMAGE_NAMES } from '../images/build.js';
import type { Machine } from '../machine/machine.js';
import type { MachineOptions } from '../machine/options.js';
import { declaredMachineFields, validateName } from '../machine/options.js';
import type { VirtualSwitch } from '../network/switch.js';
import type { retry } from '../util/retry.js';
import { callback, parseInput, timeoutMs, wholeNumber } from '../util/validate.js';
import type { PollingCondition, PollingConditionOptions } from './polling.js';

/** A machine as a test declares it; name, networks and hosts come from the test. */
export type MachineDeclaration = Omit<MachineOptions, 'name' | 'networks' | 'hosts' | 'log' | 'signal'> & {
  /** Virtual LANs the machine is on (default [1]); machine i gets 192.168.<vlan>.<i+1>. */
  vlans?: number[];
  /**
   * Runs once after boot. With `tests`, the machine is snapshotted after it and every test
   * starts from a fresh clone of that state; the snapshot is reused by later runs until the
   * setup's source, `setupVersion` or the machine's configuration changes.
   */
  setup?: (machine: Machine) => Promise<void>;
  /** Bump to invalidate a cached setup snapshot when the setup depends on something outside its code. */
  setupVersion?: string;
  /** false: the machine is not started with the others; the test calls `name.start()` (single tests only). */
  start?: boolean;
};

export interface TestContext {
  /** Writes a line to the test log. */
  log(message: string): void;
  /** Runs a named step; its name and duration are logged, and a failure names it. */
  subtest<T>(name: string, body: () => Promise<T>): Promise<T>;
  /** The switch of VLAN `n` of this test, for faults and captures (partition, impair, capture, ...). */
  vlan(n: number): VirtualSwitch;
  /** Waits on the host while the machines run on. */
  sleep(seconds: number): Promise<void>;
  /** Calls `attempt` until it returns something other than false; see RetryOptions. */
  retry: typeof retry;
  /**
   * A condition checked before machine commands, at most once per `intervalMs` (default 2 s); when
   * it throws or returns false, the command and the test fail, naming it. `stop()` ends it.
   */
  pollingCondition(check: () => unknown, options?: PollingConditionOptions): PollingCondition;
  /** Waits until every running machine has shut down. */
  joinAll(options?: { timeoutMs?: number }): Promise<void>;
  /** Where the run's reports, copies and diagnostics go (`--output`). */
  outputDir: string;
  /** The test's machine, when it has exactly one. */
  machine?: Machine;
}

export type TestBody<M extends string = string> = (
  context: Record<M, Machine> & TestContext,
) => Promise<void>;

export interface TestDefinition<M extends string = string> {
  name?: string;
  machines: Record<M, MachineDeclaration>;
  /** The whole run, boot included, must end within this time (default 10 minutes). */
  timeoutMs?: number;
  /** With `tests`: each test must end within this time; a test that does not fails and the next runs. */
  testTimeoutMs?: number;
  /** One test on freshly booted machines. */
  test?: TestBody<M>;
  /** Several tests, each on its own clones of the machines as they were after setup. */
  tests?: Record<string, TestBody<M>>;
}

const RESERVED = new Set([
  'log',
  'subtest',
  'vlan',
  'sleep',
  'retry',
  'pollingCondition',
  'joinAll',
  'outputDir',
]);

/** Machine i on VLAN v is 192.168.<v>.<i+1>: VLANs are 1 to 254, machines at most 253. */
const machineDeclaration = z
  .object({
    ...declaredMachineFields,
    vlans: z
      .array(wholeNumber(1, 254))
      .refine((vlans) => new Set(vlans).size === vlans.length, { error: 'VLANs must be distinct' })
      .optional(),
    setup: callback.optional(),
    setupVersion: z.string({ error: 'must be a string' }).optional(),
    start: z.boolean({ error: 'must be true or false' }).optional(),
  })
  .strict();

const definitionLimits = z
  .object({
    name: z.string({ error: 'must be a string' }).optional(),
    machines: z.record(z.string(), z.unknown()).refine((machines) => Object.keys(machines).length <= 253, {
      error: 'at most 253 machines (their addresses are 192.168.<vlan>.1 to .253)',
    }),
    timeoutMs: timeoutMs.optional(),
    testTimeoutMs: timeoutMs.optional(),
    test: callback.optional(),
    tests: z.record(z.string(), callback).optional(),
  })
  .strict();

/** Declares a test script: its machines and what to do with them. */
export function defineTest<M extends string>(definition: TestDefinition<M>): TestDefinition<M> {
  return definition;
}

/** Checks that a loaded module's default export is a test definition. */
export function asTestDefinition(value: unknown, source: string): TestDefinition {
  const candidate = value as Partial<TestDefinition> | undefined;
  const usage = `${source} must export default defineTest({ machines: {...}, async test(...) {...} }) (or tests: { name: async (...) => {...} })`;
  if (!candidate || typeof candidate !== 'object') throw new ConfigError(usage);
  const hasTest = typeof candidate.test === 'function';
  const hasTests = candidate.tests !== undefined;
  if (hasTest === hasTests) throw new ConfigError(`${usage}: give exactly one of test and tests`);
  if (hasTests) {
    const tests = Object.entries(candidate.tests ?? {});
    if (tests.length === 0) throw new ConfigError(`${source}: tests is empty`);
    const notFunction = tests.find(([, body]) => typeof body !== 'function');
    if (notFunction)
      throw new ConfigError(`${source}: test ${JSON.stringify(notFunction[0])} is not a function`);
  }
  if (
    !candidate.machines ||
    Array.isArray(candidate.machines) ||
    typeof candidate.machines !== 'object' ||
    Object.keys(candidate.machines).length === 0
  ) {
    throw new ConfigError(`${source}: the test declares no machines`);
  }
  for (const [name, declaration] of Object.entries(candidate.machines)) {
    if (RESERVED.has(name))
      throw new ConfigError(`${source}: "${name}" is reserved and cannot name a machine`);
    try {
      validateName(name);
    } catch (error) {
      throw new ConfigError(`${source}: ${(error as Error).message}`);
    }
    const image = (declaration as MachineDeclaration | undefined)?.image;
    if (typeof image === 'string' && !(IMAGE_NAMES as readonly string[]).includes(image)) {
      throw new ConfigError(
        `${source}: machine ${name} asks for unknown image "${image}" (known images: ${IMAGE_NAMES.join(', ')})`,
      );
    }
    parseInput(machineDeclaration, declaration, `${source}: machine ${name}`);
  }
  parseInput(definitionLimits, candidate, source);
  return candidate as TestDefinition;
}

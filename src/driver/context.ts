import { ConfigError, describeValue } from '../errors.js';
import type { Machine } from '../machine/machine.js';
import type { VirtualSwitch } from '../network/switch.js';
import type { RunLog } from '../util/log.js';
import { retry } from '../util/retry.js';
import { elapsedMs, sleep } from '../util/time.js';
import type { TestContext } from './definition.js';
import type { Ledger } from './ledger.js';
import { PollingConditions } from './polling.js';

/** What a test body receives besides its machines; `close()` ends its polling conditions. */
export function testContext(
  log: RunLog,
  state: { step: string },
  switches: Map<number, VirtualSwitch>,
  machines: Record<string, Machine>,
  outputDir: string,
  ledger?: Ledger,
): { context: TestContext; conditions: PollingConditions } {
  const conditions = new PollingConditions();
  // Machines declared with start: false are watched once started.
  for (const machine of Object.values(machines)) if (machine.isRunning) conditions.watch(machine);
  const only = Object.values(machines);
  const context: TestContext = {
    vlan: (n) => {
      const sw = switches.get(n);
      if (!sw) {
        throw new ConfigError(
          `vlan(${describeValue(n)}): this test has VLANs ${[...switches.keys()].join(', ') || 'none'}`,
        );
      }
      return sw;
    },
    log: log.for('test'),
    subtest: async (name, run) => {
      const outer = state.step;
      state.step = `subtest "${name}"`;
      const started = performance.now();
      log.line('test', `subtest ${name}`);
      try {
        const result = await run();
        log.line('test', `subtest ${name}: ok (${elapsedMs(started)} ms)`);
        ledger?.record({ kind: 'subtest', name, durationMs: elapsedMs(started), outcome: 'ok' });
        state.step = outer;
        return result;
      } catch (error) {
        const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
        ledger?.record({
          kind: 'subtest',
          name,
          durationMs: elapsedMs(started),
          outcome: 'failed',
          error: message,
        });
        throw error;
      }
    },
    sleep: (seconds) => {
      if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0)
        throw new ConfigError(`sleep: seconds: must be a number from 0 (got ${describeValue(seconds)})`);
      return sleep(seconds * 1000);
    },
    retry,
    pollingCondition: (check, options) => conditions.add(check, options),
    joinAll: async (options = {}) => {
      await Promise.all(
        Object.values(machines)
          .filter((machine) => machine.isRunning)
          .map((machine) => machine.waitForShutdown(options)),
      );
    },
    outputDir,
    ...(only.length === 1 && !('machine' in machines) ? { machine: only[0] } : {}),
  };
  return { context, conditions };
}

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { testContext } from '../../src/driver/context.js';
import { PollingConditions } from '../../src/driver/polling.js';
import { ConfigError, type Machine, RunLog, TestRunError, TimeoutError } from '../../src/index.js';
import type { CommandObserver } from '../../src/machine/commands.js';
import { retry } from '../../src/util/retry.js';

/** Just enough of a Machine for the context: its observers, run by `command()`. */
function fakeMachine(name: string) {
  const observers = new Set<CommandObserver>();
  const machine = {
    name,
    isRunning: true,
    observeCommands(observer: CommandObserver) {
      observers.add(observer);
      return () => observers.delete(observer);
    },
    async command(text: string) {
      for (const observer of observers) await observer(text, 'succeed')?.before;
    },
  };
  return machine as unknown as Machine & { command(text: string): Promise<void> };
}

const quietLog = new RunLog(() => {});

describe('retry', () => {
  test('an attempt that never settles is abandoned after attemptTimeoutMs', async () => {
    const started = performance.now();
    const signals: AbortSignal[] = [];
    const value = await retry(
      ({ number, signal }) => {
        signals.push(signal);
        return number < 3 ? new Promise<string>(() => {}) : 'third';
      },
      { timeoutMs: 5000, attemptTimeoutMs: 100, intervalMs: 10 },
    );
    assert.equal(value, 'third');
    assert.ok(performance.now() - started < 2000);
    assert.deepEqual(
      signals.map((signal) => signal.aborted),
      [true, true, false],
    );
  });

  test('runs out with a TimeoutError showing the last failure', async () => {
    const error = await retry(
      () => {
        throw new Error('still broken');
      },
      { timeoutMs: 300, intervalMs: 50, description: 'the widget' },
    ).catch((e: unknown) => e);
    assert.ok(error instanceof TimeoutError);
    assert.match(error.message, /waiting for the widget/);
    assert.match(error.message, /still broken/);
  });

  test('refuses attemptTimeoutMs larger than timeoutMs, and bad numbers', async () => {
    await assert.rejects(
      retry(() => true, { timeoutMs: 100, attemptTimeoutMs: 200 }),
      ConfigError,
    );
    await assert.rejects(
      retry(() => true, { timeoutMs: -1 }),
      ConfigError,
    );
  });
});

describe('polling conditions', () => {
  test('are checked before commands, at most once per interval', async () => {
    const machine = fakeMachine('box');
    const conditions = new PollingConditions();
    conditions.watch(machine);
    const condition = conditions.add(() => true, { intervalMs: 200 });
    const started = performance.now();
    let commands = 0;
    while (performance.now() - started < 700) {
      await machine.command('true');
      commands++;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.ok(commands > 20, `${commands} commands`);
    assert.ok(condition.checks >= 3 && condition.checks <= 5, `${condition.checks} checks`);
    condition.stop();
    const before = condition.checks;
    await machine.command('true');
    assert.equal(condition.checks, before, 'a stopped condition is not checked');
  });

  test('a failing condition fails the command that triggered it, naming it', async () => {
    const machine = fakeMachine('box');
    const conditions = new PollingConditions();
    conditions.watch(machine);
    conditions.add(
      () => {
        throw new Error('service died');
      },
      { intervalMs: 0, description: 'service alive' },
    );
    await assert.rejects(
      machine.command('true'),
      (error: Error) =>
        error instanceof TestRunError && /"service alive" failed: service died/.test(error.message),
    );
    conditions.close();
  });
});

describe('test context', () => {
  test('a single machine is also `machine`; two are not', () => {
    const solo = fakeMachine('solo');
    const one = testContext(quietLog, { step: '' }, new Map(), { solo }, '/tmp/out').context;
    assert.equal(one.machine, solo);
    assert.equal(one.outputDir, '/tmp/out');
    const two = testContext(
      quietLog,
      { step: '' },
      new Map(),
      { a: fakeMachine('a'), b: fakeMachine('b') },
      '/x',
    );
    assert.equal(two.context.machine, undefined);
  });

  test('sleep refuses what is not a number of seconds', () => {
    const { context } = testContext(quietLog, { step: '' }, new Map(), {}, '/x');
    assert.throws(() => context.sleep(-1), ConfigError);
    assert.throws(() => context.sleep(Number.NaN), ConfigError);
  });
});

// Every public wait checks its bounds with the one schema, before it waits; and the waits that
// make attempts give each one at most attemptTimeoutMs. Machines here are stand-ins whose guest
// never shows what is awaited: a wait that skipped its checks would run until the guard below.
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { describe, it } from 'node:test';
import { GuestProcess } from '../../src/agent/process.js';
import { SerialConsole } from '../../src/console/serial.js';
import { ConsoleShell } from '../../src/console/shell.js';
import { CommandTimeoutError, ConfigError, retry, TimeoutError } from '../../src/index.js';
import { Machine } from '../../src/machine/machine.js';
import { sleep } from '../../src/util/time.js';

/** A header (rows, columns, cursor) and one blank cell: what /dev/vcsa1 of an empty screen gives. */
const BLANK_VCSA = Buffer.from([1, 1, 0, 0, 32, 7]);

interface Calls {
  /** The timeoutMs each guest command, QMP request or OCR run was given. */
  timeouts: Array<number | undefined>;
}

/** A machine whose commands fail (or block until their time is up, when `block` says so). */
function standIn(block: (call: number) => boolean = () => false): { machine: Machine; calls: Calls } {
  const calls: Calls = { timeouts: [] };
  const machine = Object.create(Machine.prototype) as Machine;
  const answer = async (command: string, options: { timeoutMs?: number } = {}) => {
    calls.timeouts.push(options.timeoutMs);
    if (block(calls.timeouts.length)) {
      await sleep(options.timeoutMs ?? 60_000);
      throw new CommandTimeoutError(command, options.timeoutMs ?? 60_000, '', '');
    }
    return { status: 0, stdout: BLANK_VCSA, stderr: Buffer.alloc(0) };
  };
  Object.assign(machine, {
    name: 'stand-in',
    stateDir: tmpdir(),
    commandTimeoutMs: 5_000,
    config: { display: true },
    internals: {
      commandTimeoutMs: 5_000,
      vmm: {
        screendump: async (_path: string, timeoutMs?: number) => {
          calls.timeouts.push(timeoutMs);
          await sleep(timeoutMs ?? 60_000);
          throw new TimeoutError('the screendump', timeoutMs ?? 60_000);
        },
        sendKeys: async () => {},
      },
    },
    execute: async (command: string, options?: { timeoutMs?: number }) => {
      await answer(command, options);
      return { exitCode: 1, stdout: '', stderr: '' };
    },
    executeRaw: answer,
  });
  for (const [key, value] of Object.entries({
    backend: { title: 'stand-in', capabilities: { display: true } },
  })) {
    Object.defineProperty(machine, key, { value });
  }
  return { machine, calls };
}

/**
 * Settles with the call's outcome, or says it is still waiting after `ms`. A call that throws
 * instead of returning a rejected promise is a failure too: `wait(...).catch()` would miss it.
 */
async function outcome(call: () => Promise<unknown>, ms = 3_000): Promise<unknown> {
  let promise: Promise<unknown>;
  try {
    promise = call();
  } catch (error) {
    return new Error(`threw at once instead of rejecting: ${String(error)}`);
  }
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise((resolve) => {
    timer = setTimeout(() => resolve(new Error(`still waiting after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        (value) => value,
        (error: unknown) => error,
      ),
      guard,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

type Wait = (machine: Machine, options: Record<string, unknown>) => Promise<unknown>;

/** Every public wait that takes `{ timeoutMs, attemptTimeoutMs }`. */
const WAITS: Array<[string, Wait]> = [
  ['waitUntilSucceeds', (m, o) => m.waitUntilSucceeds('true', o)],
  ['waitUntilFails', (m, o) => m.waitUntilFails('false', o)],
  ['waitForFile', (m, o) => m.waitForFile('/etc/x', o)],
  ['waitForOpenPort', (m, o) => m.waitForOpenPort(80, o)],
  ['waitForOpenPort', (m, o) => m.waitForOpenPort(80, o && { address: '127.0.0.1', ...o })],
  ['waitForClosedPort', (m, o) => m.waitForClosedPort(80, o)],
  ['waitForOpenUnixSocket', (m, o) => m.waitForOpenUnixSocket('/run/x.sock', o)],
  ['waitForUnit', (m, o) => m.waitForUnit('x.service', o)],
  ['waitForConsoleText', (m, o) => m.waitForConsoleText('x', o)],
  ['waitForQmpEvent', (m, o) => m.waitForQmpEvent('STOP', o)],
  ['waitForShutdown', (m, o) => m.waitForShutdown(o)],
  ['waitUntilTtyMatches', (m, o) => m.waitUntilTtyMatches(1, /never/, o)],
  ['waitForText', (m, o) => m.waitForText(/never/, o)],
  ['retry', (_m, o) => retry(() => false, o)],
];

const BAD_BOUNDS: Array<[string, unknown]> = [
  ['NaN', Number.NaN],
  ['Infinity', Number.POSITIVE_INFINITY],
  ['-1', -1],
  ['0', 0],
  ['1.5', 1.5],
  ['"1000"', '1000'],
  ['2^31', 2 ** 31],
];

describe('wait bounds', () => {
  for (const [method, wait] of WAITS) {
    for (const field of ['timeoutMs', 'attemptTimeoutMs']) {
      for (const [shown, value] of BAD_BOUNDS) {
        it(`${method} refuses ${field}: ${shown} before it waits`, async () => {
          const { machine, calls } = standIn();
          const error = await outcome(() => wait(machine, { [field]: value }));
          assert.ok(error instanceof ConfigError, `${method}: ${String(error)}`);
          assert.match(error.message, new RegExp(`^${method}: options: ${field}: `));
          assert.deepEqual(calls.timeouts, [], 'nothing was sent');
        });
      }
    }
    it(`${method} refuses an attempt longer than the wait, and unknown options`, async () => {
      const { machine } = standIn();
      const longer = await outcome(() => wait(machine, { timeoutMs: 1000, attemptTimeoutMs: 2000 }));
      assert.ok(longer instanceof ConfigError, String(longer));
      assert.match(longer.message, /attemptTimeoutMs must not be larger than timeoutMs/);
      const typo = await outcome(() => wait(machine, { timeout: 1000 }));
      assert.ok(typo instanceof ConfigError, String(typo));
      assert.match(typo.message, /unknown option "timeout"/);
      const notAnObject = await outcome(() => wait(machine, null as never));
      assert.ok(notAnObject instanceof ConfigError, String(notAnObject));
    });
  }

  it('the serial console and its shell refuse bad bounds before they wait', async () => {
    const serial = Object.create(SerialConsole.prototype) as SerialConsole;
    for (const [, value] of BAD_BOUNDS) {
      const timeoutMs = value as number;
      const calls: Array<[RegExp, () => Promise<unknown>]> = [
        [/^console\.expect: options: timeoutMs: /, () => serial.expect('x', { timeoutMs })],
        [/^console\.waitForText: timeoutMs: /, () => serial.waitForText('x', timeoutMs)],
        [/^consoleShell: options: timeoutMs: /, () => ConsoleShell.open(serial, 'm', { timeoutMs })],
      ];
      for (const [message, call] of calls) {
        const error = await outcome(call);
        assert.ok(error instanceof ConfigError, String(error));
        assert.match(error.message, message);
      }
    }
  });

  it('GuestProcess.wait refuses a bad timeout, and waits without one', async () => {
    const process = Object.create(GuestProcess.prototype) as GuestProcess;
    let exit!: (value: { exitCode: number; timedOut: boolean }) => void;
    Object.assign(process, {
      exited: new Promise((resolve) => {
        exit = resolve;
      }),
    });
    for (const [, value] of BAD_BOUNDS) {
      const error = await outcome(() => process.wait(value as number));
      assert.ok(error instanceof ConfigError, String(error));
      assert.match(error.message, /^GuestProcess\.wait: timeoutMs: /);
    }
    const waiting = process.wait();
    setTimeout(() => exit({ exitCode: 3, timedOut: false }), 50);
    assert.deepEqual(await outcome(() => waiting), { exitCode: 3, timedOut: false });
  });
});

describe('attempts within a wait', () => {
  it('waitUntilTtyMatches gives each read attemptTimeoutMs and tries a blocked one again', async () => {
    const { machine, calls } = standIn((call) => call === 1);
    const started = performance.now();
    const error = await outcome(() =>
      machine.waitUntilTtyMatches(1, /never/, { timeoutMs: 1_500, attemptTimeoutMs: 300 }),
    );
    assert.ok(error instanceof TimeoutError, String(error));
    assert.ok(performance.now() - started < 2_500, 'the wait kept to its timeoutMs');
    assert.ok(calls.timeouts.length >= 2, `tried again after the blocked read: ${calls.timeouts}`);
    assert.ok(
      calls.timeouts.every((ms) => ms !== undefined && ms <= 300),
      `every read within attemptTimeoutMs: ${calls.timeouts}`,
    );
  });

  it('waitForUnit takes attemptTimeoutMs and runs a blocked watch again', async () => {
    const { machine, calls } = standIn(() => true);
    const started = performance.now();
    const error = await outcome(() =>
      machine.waitForUnit('x.service', { timeoutMs: 1_000, attemptTimeoutMs: 400 }),
    );
    assert.ok(error instanceof TimeoutError && !(error instanceof CommandTimeoutError), String(error));
    assert.match(error.message, /unit x\.service on stand-in to be active/);
    assert.ok(performance.now() - started < 2_000, 'the wait kept to its timeoutMs');
    assert.ok(calls.timeouts.length >= 2, `ran the watch again: ${calls.timeouts}`);
    assert.ok(
      calls.timeouts.every((ms) => ms !== undefined && ms <= 400),
      `${calls.timeouts}`,
    );
  });

  it('waitForText gives each OCR attempt what is left of the wait, not a fixed minute', async () => {
    const { machine, calls } = standIn();
    const started = performance.now();
    const error = await outcome(() => machine.waitForText(/never/, { timeoutMs: 1_200 }));
    assert.ok(error instanceof TimeoutError, String(error));
    assert.match(error.message, /screen text of stand-in/);
    assert.ok(performance.now() - started < 2_200, 'the wait kept to its timeoutMs');
    assert.ok(
      calls.timeouts.every((ms) => ms !== undefined && ms <= 1_200),
      `each screendump within the wait: ${calls.timeouts}`,
    );
    const { machine: other, calls: attempts } = standIn();
    await outcome(() => other.waitForText(/never/, { timeoutMs: 2_000, attemptTimeoutMs: 250 }));
    assert.ok(attempts.timeouts.length >= 2, `tried again: ${attempts.timeouts}`);
    assert.ok(
      attempts.timeouts.every((ms) => ms !== undefined && ms <= 250),
      `${attempts.timeouts}`,
    );
  });
});

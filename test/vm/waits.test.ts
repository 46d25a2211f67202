// Waits on a real guest keep to their bounds: bad bounds are refused before anything waits, an
// attempt that blocks is cut at attemptTimeoutMs and tried again, and a spawned process's wait()
// without a timeout lasts until it exits. (test/unit/waits.test.ts covers every wait's schema.)
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ConfigError, type Machine, startMachine, TimeoutError } from '../../src/index.js';

describe('waits on the tiny image', () => {
  let machine: Machine;

  before(async () => {
    machine = await startMachine({ name: 'waits' });
  });

  after(async () => {
    await machine?.close();
  });

  it('refuses NaN, Infinity and strings at once, and the machine stays usable', async () => {
    const refused: Array<() => Promise<unknown>> = [
      () => machine.waitUntilTtyMatches(1, /x/, { timeoutMs: Number.NaN }),
      () => machine.waitForText(/x/, { timeoutMs: Number.NaN }),
      () => machine.waitForUnit('x.service', { attemptTimeoutMs: Number.POSITIVE_INFINITY }),
      () => machine.waitUntilSucceeds('true', { attemptTimeoutMs: '500' as never }),
      () => machine.waitForOpenPort(22, { address: '127.0.0.1', attemptTimeoutMs: -1 }),
    ];
    for (const call of refused) await assert.rejects(call(), ConfigError);
    const spawned = await machine.spawn('exit 0');
    await assert.rejects(spawned.wait(Number.NaN), ConfigError);
    assert.equal(await machine.succeed('echo ok'), 'ok\n');
  });

  it('spawn(...).wait() with no timeout waits for the exit', async () => {
    const spawned = await machine.spawn('sleep 1; echo done; exit 4');
    const started = performance.now();
    assert.deepEqual(await spawned.wait(), { exitCode: 4, timedOut: false });
    assert.ok(performance.now() - started > 500, 'it waited for the sleep');
    assert.equal(spawned.stdoutBytes.toString(), 'done\n');
  });

  it('an attempt that blocks is cut at attemptTimeoutMs and tried again within timeoutMs', async () => {
    await machine.succeed('rm -f /tmp/tries');
    const started = performance.now();
    // The first attempt blocks; the ones after it succeed at once.
    await machine.waitUntilSucceeds('echo x >> /tmp/tries; [ "$(wc -l < /tmp/tries)" -gt 1 ] || sleep 60', {
      timeoutMs: 30_000,
      attemptTimeoutMs: 1_000,
    });
    assert.ok(performance.now() - started < 15_000, 'the blocked attempt did not eat the budget');
    const error = await machine
      .waitUntilSucceeds('sleep 60', { timeoutMs: 4_000, attemptTimeoutMs: 1_000 })
      .catch((e: unknown) => e);
    assert.ok(error instanceof TimeoutError, String(error));
    assert.match(error.message, /attempts/);
  });

  it('waitUntilTtyMatches keeps to its timeoutMs', async (t) => {
    if ((await machine.execute('test -e /dev/vcsa1')).exitCode !== 0) return t.skip('no /dev/vcsa1');
    const started = performance.now();
    const error = await machine
      .waitUntilTtyMatches(1, /never shown/, { timeoutMs: 2_500, attemptTimeoutMs: 1_000 })
      .catch((e: unknown) => e);
    assert.ok(error instanceof TimeoutError, String(error));
    assert.ok(performance.now() - started < 6_000, 'within its time and a read');
  });
});

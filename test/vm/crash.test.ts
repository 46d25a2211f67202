// Guest death in its three forms: kernel panic, QEMU killed from outside, poweroff.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { MachineCrashedError, startMachine } from '../../src/index.js';

describe('guest death', () => {
  it('fails a pending call at once with MachineCrashedError and the console tail on kernel panic', async () => {
    await using machine = await startMachine({ name: 'panic' });
    const started = performance.now();
    const error = await machine
      .execute('echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger; sleep 100', {
        timeoutMs: 120_000,
      })
      .catch((e: unknown) => e);
    assert.ok(error instanceof MachineCrashedError, String(error));
    assert.ok(performance.now() - started < 60_000, 'failed at once, not at the command timeout');
    assert.match(error.consoleTail, /Kernel panic|sysrq/i);
    assert.match(error.message, /console tail/);
    await assert.rejects(machine.execute('true'), MachineCrashedError);
    assert.equal(machine.isRunning, false);
  });

  it('fails pending and later calls when QEMU is killed from outside', async () => {
    await using machine = await startMachine({ name: 'killed' });
    const pending = machine.execute('sleep 100', { timeoutMs: 120_000 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    process.kill(machine.pid, 'SIGKILL');
    const error = await pending.catch((e: unknown) => e);
    assert.ok(error instanceof MachineCrashedError, String(error));
    assert.match(error.message, /QEMU exited unexpectedly \(killed by SIGKILL\)/);
    await assert.rejects(machine.succeed('true'), MachineCrashedError);
  });

  it('survives QEMU being killed while idle: no stray socket error, later calls fail clearly', async () => {
    await using machine = await startMachine({ name: 'idle-kill' });
    machine.sendConsole('yes | head -c 100000\n'); // console output in flight when the sockets reset
    process.kill(machine.pid, 'SIGKILL');
    await machine.waitForShutdown({ timeoutMs: 10_000 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const error = await machine.execute('true').catch((e: unknown) => e);
    assert.ok(error instanceof MachineCrashedError, String(error));
    assert.match(error.message, /killed by SIGKILL/);
  });

  it('reports what QEMU said when it refuses to start, leaving nothing behind', async () => {
    const error = await startMachine({ name: 'refused', qemuArgs: ['-device', 'no-such-device'] }).catch(
      (e: unknown) => e,
    );
    assert.ok(error instanceof Error, String(error));
    assert.match(error.message, /exited during start-up \(status 1\)/);
    assert.match(error.message, /no-such-device/);
    assert.deepEqual(
      readdirSync('/dev/shm').filter((file) => file.includes('-refused-')),
      [],
      'its RAM file is gone',
    );
  });

  it('an AbortSignal stops a boot in progress: the start fails at once and leaves no QEMU', async () => {
    const controller = new AbortController();
    const started = performance.now();
    setTimeout(() => controller.abort(), 500);
    // fresh: a boot (a start from the boot cache could be done before the abort).
    const error = await startMachine({ name: 'abort-boot', fresh: true, signal: controller.signal }).catch(
      (e: unknown) => e,
    );
    assert.ok(error instanceof Error, String(error));
    assert.ok(
      performance.now() - started < 30_000,
      `the start failed after ${performance.now() - started} ms`,
    );
    const running = readdirSync('/proc').filter((pid) => {
      try {
        return /-name\0abort-boot\0/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
      } catch {
        return false;
      }
    });
    assert.deepEqual(running, [], 'no QEMU of the aborted boot runs');
    assert.deepEqual(
      readdirSync('/dev/shm').filter((file) => file.includes('-abort-boot-')),
      [],
      'its RAM file is gone',
    );
  });

  it('shuts down cleanly from inside and reports calls after it', async () => {
    const machine = await startMachine({ name: 'poweroff' });
    await machine.succeed('echo bye > /tmp/bye');
    await machine.shutdown({ timeoutMs: 60_000 });
    assert.equal(machine.isRunning, false);
    await assert.rejects(machine.execute('true'), /shut down/);
    await machine.close();
    await machine.close(); // idempotent
  });

  it('a guest that powers itself off ends waitForShutdown', async () => {
    await using machine = await startMachine({ name: 'selfoff' });
    await machine.succeed('(sleep 1; poweroff) >/dev/null 2>&1 &');
    const exit = await machine.waitForShutdown({ timeoutMs: 60_000 });
    assert.equal(exit.code, 0);
  });
});

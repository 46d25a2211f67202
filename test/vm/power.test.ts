// reboot(): the same Machine object, and the same QEMU process, before and after.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PNG } from 'pngjs';
import { ConfigError, GuestRebootedError, startMachine } from '../../src/index.js';

/** The kernel makes a new one at every boot. */
const bootId = (vm: { succeed(command: string): Promise<string> }) =>
  vm.succeed('cat /proc/sys/kernel/random/boot_id');

describe('reboot on tiny', () => {
  for (const allowReboot of [true, false]) {
    it(`reboots in the same QEMU and sets the guest up again (allowReboot: ${allowReboot})`, async () => {
      await using vm = await startMachine({ name: 'rebooter', allowReboot, hosts: { peer: '10.9.9.9' } });
      const pid = vm.pid;
      await vm.succeed('echo before > /root/marker');
      const before = await bootId(vm);
      await vm.reboot({ timeoutMs: 120_000 });
      assert.equal(vm.pid, pid, 'the same QEMU process');
      assert.ok(vm.isRunning);
      // tiny's root is in RAM: a file written before is gone after a real reboot.
      assert.equal((await vm.execute('cat /root/marker')).exitCode, 1);
      assert.notEqual(await bootId(vm), before, 'a new boot');
      assert.equal(await vm.succeed('hostname'), 'rebooter\n');
      assert.match(await vm.succeed('cat /etc/hosts'), /10\.9\.9\.9 peer/);
      assert.equal(await vm.succeed('echo works'), 'works\n');
    });
  }

  it('a guest that reboots itself (allowReboot) is set up again; what the reboot killed says so, waits wait on', async () => {
    await using vm = await startMachine({ name: 'selfboot', allowReboot: true, hosts: { peer: '10.9.9.9' } });
    const pid = vm.pid;
    const first = await bootId(vm);
    const sleeper = await vm.spawn('sleep 600');
    // The command in flight when the guest reboots cannot complete.
    await assert.rejects(vm.execute('(sleep 1; reboot) > /dev/null 2>&1 & sleep 60'), (error: Error) => {
      assert.ok(error instanceof GuestRebootedError, String(error));
      assert.match(
        error.message,
        /^machine selfboot: the guest rebooted during command "\(sleep 1; reboot\)/,
      );
      return true;
    });
    await assert.rejects(sleeper.wait(10_000), GuestRebootedError);
    // Later calls wait until the guest is back and set up again.
    const second = await bootId(vm);
    assert.notEqual(second, first, 'a new boot');
    assert.equal(await vm.succeed('hostname'), 'selfboot\n');
    assert.match(await vm.succeed('cat /etc/hosts'), /10\.9\.9\.9 peer/);
    // A wait that a reboot interrupts goes on in the guest that came back.
    await vm.execute('reboot', { check: false });
    const newBoot = `test "$(cat /proc/sys/kernel/random/boot_id)" != ${second.trim()}`;
    await vm.waitUntilSucceeds(`${newBoot} && hostname | grep -qx selfboot`, { timeoutMs: 120_000 });
    assert.equal(vm.pid, pid, 'the same QEMU process');
    assert.equal((await vm.succeed('cat /etc/hosts')).match(/peer/g)?.length, 1, 'hosts lines once');
  });

  it('two resets in a row (as some reboots make) set the guest up once, for the last', async () => {
    // No hosts lines: the set-up ends with the address, which a second run would fail to add.
    await using vm = await startMachine({ name: 'twice', allowReboot: true });
    let resets = 0;
    const both = vm.waitForQmpEvent((event) => event.event === 'RESET' && ++resets === 2);
    await Promise.all([vm.qmp.execute('system_reset'), vm.qmp.execute('system_reset')]);
    await both;
    assert.equal(await vm.succeed('hostname'), 'twice\n');
    assert.match(await vm.succeed('ip -4 addr'), /10\.0\.2\.15/);
  });

  it('starts again after shutdown() on the same disks, with what was written kept', async () => {
    await using vm = await startMachine({ name: 'restarter', disks: [{ sizeMiB: 8 }] });
    // tiny's root is in RAM: the kept bytes live on the extra disk, written raw.
    await vm.succeed('echo kept-across-boots | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync');
    const before = await bootId(vm);
    await vm.shutdown();
    assert.equal(vm.isRunning, false);
    await assert.rejects(vm.execute('true'), /shut down/);
    await vm.start();
    assert.ok(vm.isRunning);
    assert.notEqual(await bootId(vm), before, 'a new boot');
    assert.equal(await vm.succeed('head -c 17 /dev/vda'), 'kept-across-boots');
    assert.equal(await vm.succeed('hostname'), 'restarter\n');
    await vm.start(); // running: nothing to do
    await vm.crash(); // and after a crash too
    await vm.start();
    assert.equal(await vm.succeed('head -c 17 /dev/vda'), 'kept-across-boots');
  });

  it('refuses a bad allowReboot value in one line', async () => {
    await assert.rejects(
      startMachine({ name: 'x', allowReboot: 'yes' as unknown as boolean }),
      (error: Error) =>
        error instanceof ConfigError && /allowReboot: must be true or false/.test(error.message),
    );
  });
});

describe('screens on tiny', () => {
  it('takes a PNG screenshot with display: true, and refuses one without a display', async () => {
    await using vm = await startMachine({ name: 'screen', display: true });
    const shot = join(vm.stateDir, 'tiny.png');
    await vm.screenshot(shot);
    const png = PNG.sync.read(await readFile(shot));
    assert.ok(png.width >= 640 && png.height >= 400, `${png.width}x${png.height}`);
    await using blind = await startMachine({ name: 'blind' });
    await assert.rejects(blind.screenshot(join(blind.stateDir, 'x.png')), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, 'screenshot: machine blind has no display (start it with display: true)');
      return true;
    });
  });
});

// Debian guests with systemd: one boot, one snapshot, a restored clone per test.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PNG } from 'pngjs';
import {
  buildImage,
  ConfigError,
  type Machine,
  restoreMachine,
  type Snapshot,
  startMachine,
  TimeoutError,
  UnitStateError,
  VirtualSwitch,
} from '../../src/index.js';
import { lacks } from '../helpers.js';

const hasTesseract = () => spawnSync('tesseract', ['--version']).status === 0;

const BROKEN_UNIT = `[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo broken-marker-$$; sleep 1; exit 3'
`;
const ECHO_SOCKET = `[Socket]
ListenStream=127.0.0.1:7777
Accept=yes
`;
const ECHO_SERVICE = `[Service]
ExecStart=/bin/cat
StandardInput=socket
`;
const USER_UNIT = `[Service]
ExecStart=/bin/sh -c 'echo user-unit-ran; exec sleep 1000'
`;

/** Shell code that writes `text` to `path` (a here-document: the unit texts hold no EOF line). */
const writeFile = (path: string, text: string) => `cat > ${path} <<'EOF'\n${text}EOF`;

describe('debian guests', { skip: lacks('snapshot') || lacks('cowFork') }, () => {
  let template: Machine;
  let snapshot: Snapshot;
  let scratch: string;
  let lan: VirtualSwitch;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vmkit-deb-'));
    lan = await VirtualSwitch.create('deblan', join(scratch, 'lan.sock'));
    template = await startMachine({
      name: 'deb',
      image: 'debian',
      display: true,
      timeoutMs: 300_000,
      networks: [{ switch: lan, address: '10.3.0.1/24' }],
    });
    await template.waitForUnit('multi-user.target', { timeoutMs: 300_000 });
    await template.succeed(
      [
        writeFile('/etc/systemd/system/broken.service', BROKEN_UNIT),
        writeFile('/etc/systemd/system/echo.socket', ECHO_SOCKET),
        writeFile('/etc/systemd/system/echo@.service', ECHO_SERVICE),
        'systemctl daemon-reload',
        'useradd -m alice',
        'mkdir -p ~alice/.config/systemd/user',
        writeFile('~alice/.config/systemd/user/hello.service', USER_UNIT),
        'chown -R alice: ~alice/.config',
        'loginctl enable-linger alice',
      ].join('\n'),
    );
    await template.waitForUnit(`user@${(await template.succeed('id -u alice')).trim()}.service`);
    snapshot = await template.snapshot();
  });

  after(async () => {
    await template?.close();
    if (snapshot) await rm(snapshot.dir, { recursive: true, force: true });
    await lan?.close();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('holds exactly the package versions its image key names', async () => {
    const image = await buildImage('debian');
    const manifest = JSON.parse(await readFile(join(image.dir, 'manifest.json'), 'utf8')) as {
      packages: string[];
    };
    // The first is the kernel, which the image carries as files, not as an installed package.
    const named = manifest.packages.slice(1);
    const names = named.map((pkg) => pkg.split('=')[0]).join(' ');
    const installed = await template.succeed(`dpkg-query -W -f '\${Package}=\${Version}\\n' ${names}`);
    assert.deepEqual(installed.trim().split('\n').sort(), [...named].sort());
  });

  it('boots to multi-user.target with the unit API answering', async () => {
    await template.requireUnitState('multi-user.target');
    const info = await template.getUnitInfo('dbus.service');
    assert.equal(info.ActiveState, 'active');
    assert.equal(info.Id, 'dbus.service');
    assert.equal(await template.getUnitProperty('dbus.service', 'SubState'), 'running');
    await assert.rejects(template.requireUnitState('broken.service'), (error: Error) => {
      assert.ok(error instanceof UnitStateError);
      assert.match(error.message, /unit broken\.service is inactive \(expected active\)/);
      return true;
    });
    assert.match(await template.journal({ unit: 'dbus.service', lines: 50 }), /dbus/i);
    const version = await template.systemctl('--version');
    assert.equal(version.exitCode, 0);
    assert.match(version.stdout, /^systemd \d+/);
    assert.equal(await template.succeed('hostname; cat /etc/hostname'), 'deb\ndeb\n');
    // Six gettys on the virtual terminals and one on the serial console.
    const gettys = await template.succeed('systemctl list-units --no-legend --plain "*getty@*" | wc -l');
    assert.equal(Number(gettys), 7);
  });

  it('reports a failing unit early, with its status and journal', async () => {
    await using vm = await restoreMachine(snapshot, { name: 'failing' });
    // Queued without waiting: the oneshot service is "activating" for a second, then fails.
    const queued = await vm.systemctl(['start', '--no-block', 'broken.service']);
    assert.equal(queued.exitCode, 0, queued.stderr);
    const t0 = performance.now();
    await assert.rejects(vm.waitForUnit('broken.service', { timeoutMs: 60_000 }), (error: Error) => {
      assert.ok(error instanceof UnitStateError, String(error));
      assert.equal(error.state, 'failed');
      assert.match(error.message, /unit broken\.service failed/);
      assert.match(error.status, /broken\.service/);
      assert.match(error.journal, /broken-marker-/);
      return true;
    });
    assert.ok(performance.now() - t0 < 30_000, 'fails long before the timeout');
    await vm.waitForUnit('broken.service', { state: 'failed', timeoutMs: 30_000, attemptTimeoutMs: 5_000 });
    // A unit that nothing will start is reported at once too.
    await assert.rejects(vm.waitForUnit('never-started.service'), /inactive and no job is queued/);
  });

  it("runs a user's units with { user }", async () => {
    await using vm = await restoreMachine(snapshot, { name: 'users' });
    const started = await vm.startJob('hello.service', { user: 'alice' });
    assert.equal(started.exitCode, 0, started.stderr);
    await vm.waitForUnit('hello.service', { user: 'alice' });
    const show = await vm.systemctl('show -P MainPID hello.service', { user: 'alice' });
    const owner = await vm.succeed(`stat -c %U /proc/${show.stdout.trim()}`);
    assert.equal(owner, 'alice\n');
    assert.equal((await vm.getUnitInfo('hello.service', { user: 'alice' })).SubState, 'running');
    await vm.stopJob('hello.service', { user: 'alice' });
    await vm.waitForUnit('hello.service', { user: 'alice', state: 'inactive' });
  });

  it('waits for ports by address and for unix sockets, without connecting', async () => {
    await using vm = await restoreMachine(snapshot, { name: 'ports' });
    await vm.waitForOpenUnixSocket('/run/dbus/system_bus_socket');
    await vm.waitForOpenUnixSocket('/run/systemd/journal/socket', { datagram: true });
    await assert.rejects(vm.waitForOpenUnixSocket('/run/nothing.sock', { timeoutMs: 1500 }), TimeoutError);
    await vm.startJob('echo.socket');
    await vm.waitForOpenPort(7777, { address: '127.0.0.1' });
    await vm.waitForOpenPort(7777);
    await assert.rejects(vm.waitForOpenPort(7777, { address: '10.0.2.15', timeoutMs: 1500 }), TimeoutError);
    await vm.stopJob('echo.socket');
    await vm.waitForClosedPort(7777, { timeoutMs: 10_000 });
  });

  it('forks with systemd state intact', async () => {
    const clones = await snapshot.fork(2, { names: ['fork1', 'fork2'] });
    try {
      for (const clone of clones) {
        await clone.requireUnitState('multi-user.target');
        await clone.requireUnitState('dbus.service');
        assert.equal(await clone.getUnitProperty('broken.service', 'LoadState'), 'loaded');
        // The user manager started before the snapshot still answers.
        await clone.requireUnitState('default.target', 'active', { user: 'alice' });
        assert.equal(await clone.succeed('cat /etc/hostname'), `${clone.name}\n`);
        // The agent's identity request: the name, once, on 127.0.1.1, and the host's clock.
        assert.equal(await clone.succeed("grep '^127.0.1.1' /etc/hosts"), `127.0.1.1\t${clone.name}\n`);
        const off = Number(await clone.succeed('date +%s.%N')) - Date.now() / 1000;
        assert.ok(Math.abs(off) < 2, `${clone.name}: guest clock ${off} s off the host's`);
      }
      // Each is a machine of its own: a machine ID of its own (the template's differs from the
      // image's too), and the journal in view under it, its boot and what comes after.
      const ids = await Promise.all([template, ...clones].map((vm) => vm.succeed('cat /etc/machine-id')));
      assert.equal(new Set(ids).size, 3, `machine IDs: ${ids.join(' ')}`);
      for (const id of ids) assert.match(id, /^[0-9a-f]{32}\n$/);
      for (const vm of [template, ...clones]) {
        // No folder of the journal's under an ID leads nowhere: journalctl would say so at every call.
        assert.equal(await vm.succeed('journalctl --no-pager -n 1 2>&1 >/dev/null'), '', vm.name);
      }
      for (const clone of clones) {
        const marker = `journal-of-${clone.name}-${Date.now()}`;
        await clone.succeed(`logger ${marker}`);
        await clone.waitUntilSucceeds(`journalctl --no-pager -n 200 | grep -q ${marker}`, {
          timeoutMs: 30_000,
        });
        // The boot's entries, from before the save, are in view too.
        assert.match(await clone.succeed('journalctl --no-pager -b | head -n 3'), /kernel|Linux version/i);
        assert.match(await clone.journal({ unit: 'dbus.service', lines: 50 }), /dbus/i);
      }
      // Each clone's systemd is its own: a job in one does not show in the other.
      const [first, second] = clones as [Machine, Machine];
      // journald goes on with the machine ID of the saved boot, until refreshIdentity restarts it.
      const entryMachineId = async (vm: Machine, label: string) => {
        const marker = `${label}-${Date.now()}`;
        await vm.succeed(`logger ${marker}`);
        const line = await vm.waitUntilSucceeds(`journalctl -o json --no-pager MESSAGE=${marker} | grep .`, {
          timeoutMs: 30_000,
        });
        return (JSON.parse(line.split('\n')[0] ?? '{}') as { _MACHINE_ID?: string })._MACHINE_ID;
      };
      const own = (await first.succeed('cat /etc/machine-id')).trim();
      assert.notEqual(await entryMachineId(first, 'before-refresh'), own);
      await first.refreshIdentity();
      assert.equal(await entryMachineId(first, 'after-refresh'), own);
      assert.match(await first.succeed('journalctl --no-pager -b | head -n 3'), /kernel|Linux version/i);
      await first.startJob('echo.socket');
      await first.waitForUnit('echo.socket');
      await second.requireUnitState('echo.socket', 'inactive');
    } finally {
      await Promise.all(clones.map((clone) => clone.close()));
    }
  });

  it('reboots with its disk kept and systemd up again; the same machine afterwards; shuts down and starts again', async () => {
    await using vm = await restoreMachine(snapshot, { name: 'rebooted' });
    const pid = vm.pid;
    const bootBefore = await vm.succeed('cat /proc/sys/kernel/random/boot_id');
    await vm.succeed('echo kept > /root/on-disk && sync');
    await vm.reboot();
    assert.equal(vm.pid, pid);
    assert.notEqual(await vm.succeed('cat /proc/sys/kernel/random/boot_id'), bootBefore);
    assert.equal(await vm.succeed('cat /root/on-disk'), 'kept\n');
    assert.equal(await vm.succeed('hostname'), 'rebooted\n');
    await vm.waitForUnit('multi-user.target');
    // The user manager comes back by itself: alice lingers.
    await vm.waitForUnit('default.target', { user: 'alice' });
    await vm.succeed('echo still-kept >> /root/on-disk');
    await vm.shutdown({ timeoutMs: 120_000 });
    assert.equal(vm.isRunning, false);
    await vm.start({ timeoutMs: 300_000 });
    assert.notEqual(vm.pid, pid, 'a new VMM on the same disks');
    assert.equal(await vm.succeed('cat /root/on-disk'), 'kept\nstill-kept\n');
    assert.equal(await vm.succeed('hostname'), 'rebooted\n');
    await vm.waitForUnit('multi-user.target');
  });

  it('a clone that reboots itself (allowReboot) comes back with its new identity; waits wait through it', async () => {
    await using vm = await restoreMachine(snapshot, {
      name: 'selfboot',
      allowReboot: true,
      networks: [{ switch: lan, address: '10.3.0.9/24' }],
    });
    const mac = vm.networks[0]?.mac as string;
    assert.notEqual(mac, template.networks[0]?.mac, 'the clone has a MAC of its own');
    const bootBefore = (await vm.succeed('cat /proc/sys/kernel/random/boot_id')).trim();
    await vm.execute('systemctl reboot', { check: false });
    // Whichever boot this sees, it must not fail because the guest rebooted under it.
    await vm.waitForUnit('multi-user.target', { timeoutMs: 300_000 });
    await vm.waitUntilSucceeds(`test "$(cat /proc/sys/kernel/random/boot_id)" != ${bootBefore}`, {
      timeoutMs: 300_000,
    });
    await vm.waitForUnit('multi-user.target', { timeoutMs: 300_000 });
    assert.equal(await vm.succeed('hostname; cat /etc/hostname'), 'selfboot\nselfboot\n');
    assert.equal((await vm.succeed('cat /sys/class/net/eth0/address')).trim(), mac);
    assert.match(await vm.succeed('ip -4 addr show eth0'), /inet 10\.3\.0\.9\/24/);
  });

  it('shows a login prompt on the screen and on tty1, and takes typed text with every printable character', async () => {
    await using vm = await restoreMachine(snapshot, { name: 'screen' });
    // getty printed the prompt before the snapshot, under the template's hostname.
    await vm.waitUntilTtyMatches(1, /^deb login:$/m, { timeoutMs: 60_000 });
    const shot = join(vm.stateDir, 'shot.png');
    await vm.screenshot(shot);
    const png = PNG.sync.read(await readFile(shot));
    assert.ok(png.width >= 640 && png.height >= 400, `${png.width}x${png.height}`);
    assert.ok(
      png.data.some((byte, i) => i % 4 !== 3 && byte > 128),
      'some text is lit',
    );
    await vm.sendChars('root\n');
    await vm.waitUntilTtyMatches(1, /^root@screen:~#$/m, { timeoutMs: 60_000 });
    const printable = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join('');
    await vm.sendChars('cat > /root/typed\n');
    await vm.sendChars(`${printable}\n`);
    await vm.sendKey('ctrl-d');
    await vm.waitUntilSucceeds('test -s /root/typed && ! pgrep -x cat', { timeoutMs: 30_000 });
    assert.equal(await vm.succeed('cat /root/typed'), `${printable}\n`);
    await vm.sendKey('alt-f2');
    await vm.waitUntilTtyMatches(2, /^deb login:$/m, { timeoutMs: 30_000 });
    assert.equal(await vm.succeed('cat /sys/class/tty/tty0/active'), 'tty2\n');
  });

  it('reads the screen by OCR where tesseract is installed', {
    skip: hasTesseract() ? false : 'no tesseract on this host',
  }, async () => {
    await using vm = await restoreMachine(snapshot, { name: 'ocr' });
    const match = await vm.waitForText(/deb login/, { timeoutMs: 120_000 });
    assert.equal(match[0], 'deb login');
    assert.match(await vm.getScreenText(), /Debian/);
  });

  it('refuses bad unit names and options in one line', async () => {
    for (const bad of ['nginx;reboot', 'a b.service', '$(id)', '']) {
      await assert.rejects(template.waitForUnit(bad), (error: Error) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, /^waitForUnit: unit: /);
        assert.ok(!error.message.includes('\n'));
        return true;
      });
    }
    await assert.rejects(template.getUnitInfo('x.service', { user: 'Bad User' }), ConfigError);
    await assert.rejects(template.waitForUnit('x.service', { state: 'up; reboot' }), ConfigError);
    await assert.rejects(template.journal({ lines: -1 }), ConfigError);
    await assert.rejects(template.waitForOpenPort(80, { address: 'not-an-ip' }), ConfigError);
    await assert.rejects(template.waitForOpenUnixSocket("/run/it's"), ConfigError);
    for (const key of ['ctrl-alt-delet', 'hyper-x', '']) {
      await assert.rejects(
        template.sendKey(key),
        (error: Error) => error instanceof ConfigError && /^sendKey: /.test(error.message),
      );
    }
    await assert.rejects(template.sendChars('é'), /sendChars: cannot type "é"/);
    for (const tty of [0, 64, 1.5]) {
      await assert.rejects(
        template.getTtyText(tty),
        /getTtyText: tty: must be a virtual terminal number from 1 to 63/,
      );
    }
  });
});

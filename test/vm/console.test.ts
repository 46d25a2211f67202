// Guests without vmkit's backdoor, driven over the serial console as a person would: a GRUB ISO
// under BIOS and UEFI (stop the countdown, pick an entry, edit its command line), a login with a
// colourful prompt, su to root, commands with exit statuses under a flood of kernel messages.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  buildImage,
  ConfigError,
  ConsoleScriptError,
  ConsoleShellError,
  type Machine,
  NoBackdoorError,
  runConsoleScript,
  startMachine,
} from '../../src/index.js';
import { runTool } from '../../src/util/exec.js';
import { lacks } from '../helpers.js';
import { grubIso, installerIso, loginInitrd, ROOT_PASSWORD, USER } from './console-targets.js';

const OVMF = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

describe('any OS over its serial console', { skip: lacks('consoleInput') }, () => {
  let dir: string;
  let iso: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-console-'));
    iso = await grubIso(dir);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Stops GRUB's countdown, picks the second entry, adds to its kernel command line, boots it. */
  async function throughGrub(machine: Machine): Promise<void> {
    // Under UEFI (and TCG) GRUB redraws slowly and its serial input drops keys that come in the
    // meantime: wait until a screen is drawn whole, and type slowly.
    const uefi = machine.config.media?.firmware === 'uefi';
    const perCharMs = uefi ? 100 : undefined;
    const settleMs = uefi ? 1000 : undefined;
    await runConsoleScript(machine, [
      {
        name: 'menu',
        phase: 'boot loader',
        expect: /automatically in \d+s/,
        timeoutMs: 90_000,
        keys: ['down'],
        until: /\*vmkit tiny \(marked\)(.*\n)*.*before booting/,
      },
      {
        name: 'edit the entry',
        settleMs,
        keys: ['e'],
        // The editor shows "setparams ...", an empty line, then the linux line; its help text last.
        until: /setparams 'vmkit tiny \(marked\)'(.*\n)*.*ESC to discard edits/,
        untilMs: 15_000,
      },
      {
        name: 'to the end of the linux line',
        // GRUB's Emacs keys: under UEFI an arrow's escape sequence can reach the editor in pieces.
        keys: ['ctrl-n', 'ctrl-n', 'ctrl-e'],
        perCharMs,
        settleMs,
      },
      { name: 'edit', send: ' vmkit.edited=yes', keys: ['ctrl-x'], perCharMs },
      { name: 'kernel up', phase: 'first boot', expect: 'vmkit: tiny image up', timeoutMs: 90_000 },
    ]);
  }

  for (const firmware of ['bios', 'uefi'] as const) {
    it(`boots an ISO under ${firmware.toUpperCase()}, through the GRUB menu by keystrokes`, {
      skip: firmware === 'uefi' && !existsSync(OVMF) ? 'no OVMF (apt-get install ovmf)' : false,
    }, async () => {
      const isoBefore = sha256(iso);
      await using machine = await startMachine({ name: `grub-${firmware}`, image: { iso }, firmware });
      // UEFI runs on a copy of OVMF's variable store in the machine's folder, never on Debian's.
      if (firmware === 'uefi') assert.ok(existsSync(join(machine.stateDir, 'uefi-vars.fd')));
      await throughGrub(machine);
      const shell = await machine.consoleShell();
      const cmdline = await shell.succeed('cat /proc/cmdline');
      assert.match(cmdline, /vmkit\.mark=second vmkit\.edited=yes/, cmdline);
      assert.deepEqual(await shell.execute('false'), { exitCode: 1, stdout: '', stderr: '' });
      await assert.rejects(machine.execute('true'), NoBackdoorError);
      const sent = machine.console.transcript.entries.filter((entry) => entry.direction === 'sent');
      assert.ok(
        sent
          .map((entry) => entry.text)
          .join('')
          .includes('vmkit.edited=yes'),
        'the transcript has what was typed',
      );
      assert.equal(sha256(iso), isoBefore, 'the ISO is unchanged');
    });
  }

  it('boots a disk through an overlay: the user disk is never written', async () => {
    const before = sha256(iso);
    {
      await using machine = await startMachine({
        name: 'disk',
        image: { disk: iso },
        readyWhen: /automatically in/,
      });
      machine.console.sendKey('enter');
      await machine.console.expect('vmkit: tiny image up', { timeoutMs: 90_000 });
      const shell = await machine.consoleShell();
      // Without the backdoor, guest port 22 is forwarded from a free host port (no sshd here).
      const sshPort = machine.sshPort ?? 0;
      assert.ok(sshPort > 0, `sshPort ${machine.sshPort}`);
      await new Promise<void>((resolve, reject) => {
        const socket = connect(sshPort, '127.0.0.1', () => {
          socket.destroy();
          resolve();
        });
        socket.once('error', reject);
      });
      await shell.succeed('dd if=/dev/zero of=/dev/vda bs=64k count=16 2>/dev/null && sync');
      assert.equal(await shell.succeed('head -c 512 /dev/vda | tr -d "\\0" | wc -c'), '0\n');
      // Kept as an image, the disk holds what the guest wrote.
      const saved = await machine.saveDiskImage('console-test-disk');
      const raw = join(dir, 'saved.raw');
      await runTool('qemu-img', ['convert', '-O', 'raw', saved.disk, raw]);
      assert.equal(
        readFileSync(raw)
          .subarray(0, 1024 * 1024)
          .some((byte) => byte !== 0),
        false,
      );
      assert.equal(await shell.succeed('echo still running'), 'still running\n');
      rmSync(saved.disk);
      await assert.rejects(machine.saveDiskImage('../x'), /saveDiskImage: name must be/);
    }
    assert.equal(sha256(iso), before, 'the ISO used as a disk is unchanged');
  });

  it('keeps the disk an installer ISO wrote, after it powered off, and boots it', async () => {
    const media = await installerIso(dir);
    let saved: { disk: string };
    {
      await using installer = await startMachine({
        name: 'installer',
        image: { iso: media.iso },
        disks: [{ sizeMiB: 64 }],
        readyWhen: 'vmkit: tiny image up',
      });
      await runConsoleScript(installer, [
        {
          name: 'write the system',
          settleMs: 500,
          sendLine:
            'grep -q vmkit.mark=installer /proc/cmdline && dd if=/install/system.img of=/dev/vda bs=1M conv=fsync && echo "installed-$((6*7))"',
        },
        { name: 'written', expect: 'installed-42', timeoutMs: 120_000 },
        { name: 'power off', sendLine: 'poweroff -f' },
      ]);
      await installer.waitForShutdown({ timeoutMs: 60_000 });
      await assert.rejects(installer.saveDiskImage('x', { disk: 1 }), /there is no disk 1/);
      await assert.rejects(
        installer.saveDiskImage('x', { disk: -1 } as never),
        (error: Error) =>
          error instanceof ConfigError && /^saveDiskImage: options: disk: /.test(error.message),
      );
      saved = await installer.saveDiskImage('console-test-installed');
    }
    try {
      await using system = await startMachine({
        name: 'installed',
        image: { disk: saved.disk },
        readyWhen: 'vmkit: tiny image up',
      });
      const shell = await system.consoleShell();
      assert.match(await shell.succeed('cat /proc/cmdline'), /vmkit\.mark=installed/);
    } finally {
      rmSync(saved.disk, { force: true });
    }
    // A machine with neither a boot disk nor disks has nothing to save.
    await using bare = await startMachine({ name: 'bare', image: { iso }, readyWhen: /automatically in/ });
    await assert.rejects(bare.saveDiskImage('x'), /image: \{ disk \}.*disks: \[\{ sizeMiB \}\]/);
  });

  describe('a login console', () => {
    let machine: Machine;

    before(async () => {
      const tiny = await buildImage('tiny');
      const initrd = await loginInitrd(dir);
      machine = await startMachine({
        name: 'login',
        image: { kernel: tiny.kernel, initrd, append: tiny.cmdline },
        readyWhen: /login: $/,
      });
    });
    after(async () => {
      await machine?.close();
    });

    it('a wrong password is a ConsoleShellError with the transcript', async () => {
      await assert.rejects(machine.consoleShell({ user: USER.name, password: 'nope' }), (error: Error) => {
        assert.ok(error instanceof ConsoleShellError, String(error));
        assert.match(error.message, /login as alice failed: wrong user or password/);
        assert.match(error.message, /> nope\\r/);
        return true;
      });
    });

    it('a missing sudo is a clear error', async () => {
      await machine.console.expect(/login: $/, { timeoutMs: 30_000, on: 'stream' }); // getty again
      await assert.rejects(
        machine.consoleShell({
          user: USER.name,
          password: USER.password,
          escalate: 'sudo',
          timeoutMs: 20_000,
        }),
        /sudo is not installed in the guest/,
      );
      machine.console.sendLine('exit');
    });

    it('logs in, su to root through a colourful prompt, and runs commands with exit statuses', async () => {
      await machine.console.expect(/login: $/, { timeoutMs: 30_000, on: 'stream' }); // logged out
      const shell = await machine.consoleShell({
        user: USER.name,
        password: USER.password,
        escalate: 'su',
        rootPassword: ROOT_PASSWORD,
      });
      assert.equal(await shell.succeed('id -u'), '0\n');
      assert.deepEqual(await shell.execute('echo out; echo err >&2; exit 7'), {
        exitCode: 7,
        stdout: 'out\nerr\n',
        stderr: '',
      });
      assert.equal(await shell.succeed("printf 'no newline'"), 'no newline');
      assert.match(await shell.fail('ls /nonexistent'), /No such file/);

      // A flood of kernel messages on the console while commands run: outputs stay exact.
      await shell.succeed(
        `(i=0; while [ $i -lt 300 ]; do echo "<3>vmkit flood $i" > /dev/kmsg; i=$((i+1)); done) &`,
      );
      for (let i = 0; i < 5; i++)
        assert.equal(await shell.succeed(`echo line-${i}; echo second-${i}`), `line-${i}\nsecond-${i}\n`);
      assert.match(machine.console.log, /vmkit flood \d+/, 'the flood reached the console');
    });
  });

  it('bad input is refused before QEMU starts, in one line naming the value', async () => {
    const cases: Array<[() => Promise<unknown>, RegExp]> = [
      [
        () => startMachine({ name: 'x', image: { iso: join(dir, 'missing.iso') } }),
        /image\.iso: cannot use .*missing\.iso: ENOENT/,
      ],
      [() => startMachine({ name: 'x', image: { disk: dir } }), /image\.disk: .* is not a regular file/],
      [
        () => startMachine({ name: 'x', image: { iso }, firmware: 'coreboot' as never }),
        /firmware: must be bios or uefi/,
      ],
      [
        () => startMachine({ name: 'x', firmware: 'uefi' }),
        /firmware and bootOrder apply to media you bring/,
      ],
      [
        () => startMachine({ name: 'x', readyWhen: /x/ }),
        /readyWhen is for machines started with backdoor: false/,
      ],
      [() => startMachine({ name: 'x', image: { iso: 42 } as never }), /image: must be \{ iso \}/],
    ];
    for (const [attempt, message] of cases) {
      await assert.rejects(attempt(), (error: Error) => {
        assert.ok(error instanceof ConfigError, `${error}`);
        assert.match(error.message, message);
        assert.doesNotMatch(error.message, /\n/);
        return true;
      });
    }
  });

  it('expect refuses a zero timeout and unknown keys; a timeout shows the screen', async () => {
    mkdirSync(join(dir, 'k'), { recursive: true });
    const tiny = await buildImage('tiny');
    await using machine = await startMachine({
      name: 'keys',
      image: { kernel: tiny.kernel, initrd: tiny.initrd, append: tiny.cmdline },
      readyWhen: 'vmkit: tiny image up',
    });
    await assert.rejects(machine.console.expect('x', { timeoutMs: 0 }), /timeoutMs: must be a whole number/);
    assert.throws(() => machine.console.sendKey('hyper-q'), /unknown key "hyper-q"/);
    machine.console.sendLine('echo screen-text-here');
    await assert.rejects(machine.console.expect(/never printed/, { timeoutMs: 1500 }), (error: Error) => {
      assert.match(error.message, /timed out after 1500 ms waiting for console text \/never printed\//);
      assert.match(error.message, /the screen:\n(.*\n)*.*\| .*screen-text-here/);
      return true;
    });
    await assert.rejects(
      runConsoleScript(machine, [{ name: 'never', phase: 'install', expect: 'nope', timeoutMs: 500 }]),
      (error: Error) =>
        error instanceof ConsoleScriptError && /step "never" \(phase install\)/.test(error.message),
    );
  });
});

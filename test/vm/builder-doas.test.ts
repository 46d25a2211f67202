// Packages a recipe installs in a builder VM, root over the serial console through doas, and SSH
// on a machine without the backdoor: one image (Debian with opendoas and openssh-server, built by
// buildInVm, the builder fleets use) booted once, its backdoor off, and reached only through its
// console and its forwarded SSH port.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildInVm } from '../../src/builder/vm-builder.js';
import { type BootImage, ConsoleShellError, type Machine, startMachine } from '../../src/index.js';
import { firstLine, lacks, root } from '../helpers.js';

/**
 * The builder's own sources, hashed into the recipe: the image is cached like any other, and a
 * change to the builder makes a new recipe, so the image this file checks is rebuilt by it.
 */
const builderSources = createHash('sha256');
for (const file of ['guest/builder/build.sh', 'src/builder/packages.ts', 'src/builder/vm-builder.ts'])
  builderSources.update(readFileSync(join(root, file)));

const ALICE = { user: 'alice', password: 'alice-pw' };
const BOB = { user: 'bob', password: 'bob-pw' };

export const DOAS_RECIPE = {
  base: 'debian' as const,
  name: 'debian-doas',
  packages: ['opendoas', 'openssh-server'],
  files: {
    '/etc/doas.conf': `permit ${ALICE.user} as root\n`,
    // Without the backdoor vmkit sets no address: the guest takes one by DHCP, as other OSes do.
    '/etc/systemd/network/10-eth0.network': '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n',
    '/etc/vmkit-test/builder-sources': `${builderSources.digest('hex')}\n`,
  },
  run: [
    'systemctl enable systemd-networkd.service',
    ...[ALICE, BOB].flatMap(({ user, password }) => [
      `useradd -m -s /bin/bash ${user}`,
      `echo '${user}:${password}' | chpasswd`,
    ]),
  ],
};

describe('a recipe built in a builder VM, driven over its console and SSH', {
  skip: lacks('consoleInput'),
  timeout: 1_800_000,
}, () => {
  let image: BootImage;
  let vm: Machine;
  const progress: string[] = [];
  let buildSeconds = 0;
  let bootSeconds = 0;
  /** The root shell the doas test reaches, for the checks of the installed packages. */
  let rootShell: Awaited<ReturnType<Machine['consoleShell']>> | undefined;

  before(async () => {
    let started = performance.now();
    image = await buildInVm(DOAS_RECIPE, { onProgress: (line) => progress.push(line) });
    buildSeconds = (performance.now() - started) / 1000;
    started = performance.now();
    vm = await startMachine({
      name: 'doas',
      image,
      memoryMiB: 384,
      backdoor: false,
      readyWhen: 'ssh',
      timeoutMs: 600_000,
    });
    bootSeconds = (performance.now() - started) / 1000;
  });
  after(async () => {
    await vm?.close();
  });

  it('up once an SSH banner answers on machine.sshPort, a host port forwarded to the guest port 22', async (t) => {
    t.diagnostic(`image ${image.name}: ${buildSeconds.toFixed(1)} s (${progress.at(-1) ?? 'cached'})`);
    t.diagnostic(`boot to an SSH banner: ${bootSeconds.toFixed(1)} s`);
    const port = vm.sshPort;
    assert.ok(port !== undefined && port > 0, `sshPort: ${port}`);
    assert.match(await firstLine(port), /^SSH-2\.0-OpenSSH_/);
  });

  it('consoleShell with escalate: doas reaches a root shell; a user doas.conf does not permit is refused', async () => {
    // Logging in at the serial getty: the boot went on past sshd, the getty may come later still.
    const refused = await vm.consoleShell({ ...BOB, escalate: 'doas' }).then(
      () => undefined,
      (error: Error) => error,
    );
    assert.ok(refused instanceof ConsoleShellError, String(refused));
    assert.match(refused.message, /doas refused: .*Operation not permitted/);
    vm.console.sendLine('exit'); // bob's shell: back to the getty, for alice's login
    await vm.console.expect(/login: *$/, { timeoutMs: 60_000 });

    const shell = await vm.consoleShell({ ...ALICE, escalate: 'doas' });
    rootShell = shell;
    assert.equal(await shell.succeed('id -u'), '0\n');
    assert.equal(
      await shell.succeed('id -un; echo "$DOAS_USER"'),
      'root\nalice\n',
      'root, by doas, for alice',
    );
    assert.match(vm.console.transcript.format(20_000), /> doas -s/);
  });

  it('the packages were installed in the builder VM with their dependencies and maintainer scripts', async () => {
    assert.equal(image.builder, 'vm', 'the image was not made by a builder VM');
    const shell = rootShell;
    assert.ok(shell, 'no root shell on the console (the doas test did not get one)');
    assert.equal(
      await shell.succeed(
        `dpkg-query -W -f '\${Package} \${Status}\\n' opendoas openssh-server openssh-sftp-server`,
      ),
      'opendoas install ok installed\nopenssh-server install ok installed\nopenssh-sftp-server install ok installed\n',
    );
    assert.equal(await shell.succeed('stat -c "%a %U" "$(command -v doas)"'), '4755 root\n');
    // Their maintainer scripts ran: openssh-server's made its privilege-separation user and host keys.
    await shell.succeed('getent passwd sshd && test -s /etc/ssh/ssh_host_ed25519_key.pub');
    // The installed doas reads the recipe's config: it permits alice, not bob.
    assert.equal(await shell.succeed("su -s /bin/sh alice -c 'doas -C /etc/doas.conf id'"), 'permit\n');
    assert.deepEqual(await shell.execute("su -s /bin/sh bob -c 'doas -C /etc/doas.conf id'"), {
      exitCode: 1,
      stdout: 'deny\n',
      stderr: '',
    });
  });
});

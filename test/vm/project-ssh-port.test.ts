// A project VM whose sshd listens on another port than 22 (`sshPort` in the config), through the
// CLI: the forward leads to that guest port, and `vmkit ssh` and rsync sync go through it.
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { cli, firstLine, lacks, root, runProgram } from '../helpers.js';

// Short: the VMs' sockets live under the project's .vmkit/ and socket paths stop at 107 bytes.
const project = mkdtempSync('/tmp/vmkit-sshport-');
const vmkit = (args: string[], timeoutMs = 600_000) =>
  runProgram(process.execPath, [cli, ...args], { cwd: project, input: '', timeoutMs });
const SSH_PORT = 2222;

copyFileSync(join(root, 'examples', 'project-vm', 'debian-ssh.json'), join(project, 'debian-ssh.json'));
writeFileSync(join(project, 'hello.txt'), 'over rsync\n');
writeFileSync(
  join(project, 'vmkit.config.json'),
  JSON.stringify({
    vms: {
      alt: {
        image: 'debian-ssh.json',
        memoryMiB: 512,
        diskMiB: 64,
        sshPort: SSH_PORT,
        // sshd moves to the configured port; nothing listens on 22 any more.
        provision: [
          `printf 'Port ${SSH_PORT}\\n' > /etc/ssh/sshd_config.d/port.conf`,
          'systemctl restart ssh.service',
        ],
        syncMethod: 'rsync',
        sync: [{ host: '.', guest: '/work/project', exclude: ['.vmkit'] }],
      },
    },
  }),
);

after(async () => {
  for (const process of processesNaming(project)) await stopDetached(process, 0);
  rmSync(project, { recursive: true, force: true });
});

describe('a project VM with sshPort', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 1_200_000,
}, () => {
  let hostPort = 0;

  it('up forwards a host port to the configured guest port, and an SSH server answers there', async (t) => {
    const started = performance.now();
    const up = await vmkit(['up', 'alt'], 900_000);
    t.diagnostic(`vmkit up: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    assert.equal(up.code, 0, up.stderr);
    const status = await vmkit(['status', 'alt', '--json']);
    const [vm] = JSON.parse(status.stdout) as Array<{ ports: Record<string, number> }>;
    assert.deepEqual(Object.keys(vm?.ports ?? {}), [String(SSH_PORT)], status.stdout);
    hostPort = vm?.ports[String(SSH_PORT)] ?? 0;
    assert.ok(hostPort > 0);
    const listening = await vmkit(['exec', 'alt', '--', 'sh', '-c', "ss -Hltn | awk '{ print $4 }'"]);
    assert.equal(listening.code, 0, listening.stderr);
    const ports = listening.stdout.split('\n').map((address) => address.replace(/^.*:/, ''));
    assert.ok(ports.includes(String(SSH_PORT)), listening.stdout);
    assert.ok(!ports.includes('22'), `something still listens on 22:\n${listening.stdout}`);
    assert.match(await firstLine(hostPort), /^SSH-2\.0-OpenSSH_/);
  });

  it('vmkit ssh reaches the sshd on the configured port; rsync sync goes through it too', async () => {
    const ssh = await vmkit(['ssh', 'alt', '--', 'echo "$SSH_CONNECTION"; id -un']);
    assert.equal(ssh.code, 0, ssh.stderr);
    const [connection, user] = ssh.stdout.trim().split('\n');
    assert.equal(connection?.split(' ')[3], String(SSH_PORT), `SSH_CONNECTION: ${connection}`);
    assert.equal(user, 'root');
    const config = await vmkit(['ssh-config', 'alt']);
    assert.match(config.stdout, new RegExp(`^\\s*Port ${hostPort}$`, 'm'), config.stdout);
    const sync = await vmkit(['sync', 'alt']);
    assert.equal(sync.code, 0, sync.stderr);
    assert.match(sync.stderr, /sync \/work\/project \(rsync\): \d+ sent/, sync.stderr);
    const synced = await vmkit(['exec', 'alt', '--', 'cat', '/work/project/hello.txt']);
    assert.equal(synced.stdout, 'over rsync\n', synced.stderr);
    assert.equal((await vmkit(['down', 'alt'])).code, 0);
    assert.deepEqual(processesNaming(join(project, '.vmkit')), [], 'no QEMU or hub left');
  });
});

// Project VMs on a Debian recipe image with openssh-server and rsync (examples/project-vm/
// debian-ssh.json), through the CLI: up (data disk on /dev/vdb behind the root disk), exec,
// real OpenSSH with vmkit's key and the pinned host key, sync by rsync over SSH, a snapshot
// saved and restored, down. A tiny VM
// beside it shows what an image without sshd says.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { cli, lacks, root, runProgram } from '../helpers.js';
import {
  CHANGED_TREE,
  CHECK_CHANGED_TREE,
  changeSyncTree,
  checkSyncedTree,
  LIST_SYNCED_TREE,
  writeSyncTree,
} from './sync-tree.js';

// Short: the VMs' sockets live under the project's .vmkit/ and socket paths stop at 107 bytes.
const project = mkdtempSync('/tmp/vmkit-pssh-');
// Generous: a first build of the recipe takes minutes, and Debian boots slowly under TCG on a busy host.
const vmkit = (args: string[], timeoutMs = 300_000) =>
  runProgram(process.execPath, [cli, ...args], { cwd: project, input: '', timeoutMs });
const guest = async (script: string, vm = 'deb') => {
  const result = await vmkit(['exec', vm, '--', 'sh', '-c', script]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
};
const sshDir = join(project, '.vmkit', 'deb', 'ssh');

for (const file of ['debian-ssh.json', 'test.sh'])
  copyFileSync(join(root, 'examples', 'project-vm', file), join(project, file));
writeFileSync(
  join(project, 'vmkit.config.json'),
  JSON.stringify({
    vms: {
      deb: {
        image: 'debian-ssh.json',
        memoryMiB: 512,
        diskMiB: 128,
        syncMethod: 'rsync',
        sync: [{ host: '.', guest: '/work/project', exclude: ['*.log', 'build/'] }],
        commands: { test: 'sh ./test.sh' },
      },
      tiny: { image: 'tiny', memoryMiB: 128, diskMiB: 32 },
    },
  }),
);

after(async () => {
  for (const process of processesNaming(project)) await stopDetached(process, 0);
  rmSync(project, { recursive: true, force: true });
});

describe('project VMs on a Debian image with sshd', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 1_200_000,
}, () => {
  it('up boots the recipe image; its data disk is /dev/vdb at /work; exec works, exit codes too', async () => {
    const up = await vmkit(['up', 'deb'], 900_000);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stderr, /VM deb is up/);
    assert.equal((await guest('grep " /work " /proc/mounts | cut -d" " -f1')).trim(), '/dev/vdb');
    assert.equal((await guest('hostname; id -u')).trim(), 'deb\n0');
    const failed = await vmkit(['exec', 'deb', '--', 'sh', '-c', 'echo out; exit 3']);
    assert.equal(failed.code, 3);
    assert.equal(failed.stdout, 'out\n');
  });

  it("ssh -- cmd runs real OpenSSH with vmkit's key (0600) and the guest's pinned host key", async () => {
    const ran = await vmkit(['ssh', 'deb', '--', 'echo "on $(hostname) as $(id -un)"; exit 7']);
    assert.equal(ran.code, 7, ran.stderr);
    assert.equal(ran.stdout, 'on deb as root\n');
    assert.equal(statSync(join(sshDir, 'id_ed25519')).mode & 0o777, 0o600);
    const hostKey = (await guest('cut -d" " -f1,2 /etc/ssh/ssh_host_ed25519_key.pub')).trim();
    assert.equal(readFileSync(join(sshDir, 'known_hosts'), 'utf8'), `vmkit-deb ${hostKey}\n`);
    // The config works for other tools as is; a host key other than the pinned one is refused.
    const config = join(sshDir, 'config');
    assert.equal(
      execFileSync('ssh', ['-F', config, 'vmkit-deb', 'echo', 'direct'], { encoding: 'utf8' }),
      'direct\n',
    );
    writeFileSync(join(sshDir, 'known_hosts'), `vmkit-deb ${hostKey.replace(/.{8}$/, 'AAAAAAAA')}\n`);
    const refused = await runProgram('ssh', ['-F', config, 'vmkit-deb', 'true'], { timeoutMs: 60_000 });
    assert.equal(refused.code, 255);
    assert.match(refused.stderr, /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/);
    const printed = await vmkit(['ssh-config', 'deb']);
    assert.equal(printed.code, 0, printed.stderr);
    assert.match(printed.stdout, /Host vmkit-deb\n {2}HostName 127\.0\.0\.1\n {2}Port \d+/);
    assert.equal(readFileSync(join(sshDir, 'known_hosts'), 'utf8'), `vmkit-deb ${hostKey}\n`, 'pinned again');
  });

  it('ssh without a command is an interactive login on a pseudo-terminal; its exit status comes back', async () => {
    // A real terminal on the host side (util-linux script); the keys are typed in after a pause.
    const session = await runProgram(
      'sh',
      [
        '-c',
        `(sleep 4; printf 'tty\\n'; sleep 2; printf 'exit 5\\n'; sleep 8) | script -qec "${process.execPath} ${cli} ssh deb" /dev/null`,
      ],
      { cwd: project, timeoutMs: 120_000 },
    );
    assert.match(session.stdout, /\/dev\/pts\/\d+/);
    assert.equal(session.code, 5, session.stdout);
  });

  it('sync by rsync over SSH: adds, changes, deletes, keeps modes and symlinks, leaves out excludes and .gitignore', async () => {
    writeSyncTree(project);
    const first = await vmkit(['sync', 'deb']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /sync \/work\/project \(rsync\): \d+ sent/);
    checkSyncedTree(await guest(LIST_SYNCED_TREE), ['debian-ssh.json']);

    const unchanged = await vmkit(['sync', 'deb']);
    assert.match(unchanged.stderr, /\(rsync\): 0 sent .*, 0 deleted/);
    changeSyncTree(project);
    const second = await vmkit(['sync', 'deb']);
    assert.match(second.stderr, /\(rsync\): 1 sent .*, 1 deleted/);
    assert.match(second.stderr, /src\/deep\/tool\.sh\n {2}-src\/gone\.txt/);
    assert.equal(await guest(CHECK_CHANGED_TREE), CHANGED_TREE);
    // vmkit's own transfer takes over where rsync left off: nothing to send.
    const own = await vmkit(['sync', 'deb', '--method', 'vmkit']);
    assert.match(own.stderr, /\(vmkit\): 0 sent .*, 0 deleted/);
  });

  it("test syncs by rsync and runs the example's root-only suite on Debian", async () => {
    const passed = await vmkit(['test', 'deb']);
    assert.equal(passed.code, 0, passed.stderr + passed.stdout);
    assert.match(passed.stderr, /\(rsync\): 0 sent/);
    assert.match(passed.stdout, /ok - tmpfs mount\nok - ext2 on a loop device\n0 failed/);
  });

  it('snapshot save, change files, snapshot restore: the files are back, and ssh still works', async () => {
    await guest('echo before > /root/mark && echo before > /work/mark && sync');
    const saved = await vmkit(['snapshot', 'save', 'x', 'deb']);
    assert.equal(saved.code, 0, saved.stderr);
    assert.match(saved.stdout + saved.stderr, /saved snapshot x of deb/);
    // The root disk, the data disk and a file only in RAM (tmpfs /run) all change.
    await guest('echo after > /root/mark && rm /work/mark && echo gone > /run/ram-only && sync');
    const restored = await vmkit(['snapshot', 'restore', 'x', 'deb']);
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal(
      await guest('cat /root/mark /work/mark; test -e /run/ram-only || echo no-ram-file'),
      'before\nbefore\nno-ram-file\n',
    );
    const ssh = await vmkit(['ssh', 'deb', '--', 'cat /root/mark']);
    assert.equal(ssh.code, 0, ssh.stderr);
    assert.equal(ssh.stdout, 'before\n');
  });

  it('an image without sshd says so: ssh and rsync refuse, auto falls back to vmkit', async () => {
    assert.equal((await vmkit(['up', 'tiny'])).code, 0);
    const ssh = await vmkit(['ssh', 'tiny', '--', 'true']);
    assert.equal(ssh.code, 2);
    assert.match(
      ssh.stderr,
      /this VM's image \(tiny\) has no sshd; use vmkit shell tiny or an image with openssh-server/,
    );
    const rsync = await vmkit(['sync', 'tiny', '--method', 'rsync']);
    assert.equal(rsync.code, 2);
    assert.match(rsync.stderr, /has no sshd/);
    const auto = await vmkit(['sync', 'tiny', '--method', 'auto']);
    assert.equal(auto.code, 0, auto.stderr);
    assert.match(auto.stderr, /\(vmkit\): \d+ sent/);
    assert.equal((await vmkit(['down', 'tiny'])).code, 0);
  });

  it('down stops the Debian VM and leaves no process behind', async () => {
    const down = await vmkit(['down', 'deb']);
    assert.equal(down.code, 0, down.stderr);
    const status = JSON.parse((await vmkit(['status', '--json'])).stdout) as Array<{ state: string }>;
    assert.deepEqual(
      status.map((vm) => vm.state),
      ['stopped', 'stopped'],
    );
    assert.deepEqual(
      processesNaming(join(project, '.vmkit')).map((process) => process.program),
      [],
      'no QEMU or hub left',
    );
  });
});

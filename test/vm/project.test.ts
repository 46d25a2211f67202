// Project VMs through the CLI on real tiny guests: init, up, status, exec, sync, test,
// snapshots and reset, two VMs, two terminals at once, a killed QEMU, down/up, destroy.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
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
const project = mkdtempSync('/tmp/vmkit-proj-');
const vmkit = (args: string[], options: { input?: string; cwd?: string; timeoutMs?: number } = {}) =>
  runProgram(process.execPath, [cli, ...args], {
    cwd: options.cwd ?? project,
    input: options.input ?? '',
    timeoutMs: options.timeoutMs ?? 240_000,
  });
const guest = async (script: string) => {
  const result = await vmkit(['exec', '--', 'sh', '-c', script]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
};
const vmmPid = (vm: string) =>
  (JSON.parse(readFileSync(join(project, '.vmkit', vm, 'run', 'vmm.json'), 'utf8')) as { pid: number }).pid;
const status = async () => {
  const result = await vmkit(['status', '--json']);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as Array<{
    name: string;
    state: string;
    ports: Record<string, number>;
    snapshots: string[];
    consoleTail?: string;
  }>;
};

writeFileSync(
  join(project, 'vmkit.config.json'),
  JSON.stringify({
    vms: {
      a: {
        image: 'tiny',
        memoryMiB: 192,
        diskMiB: 64,
        ports: [{ guest: 8080 }],
        sync: [{ host: '.', guest: '/work/project', exclude: ['*.log', 'build/'] }],
        commands: { test: 'sh ./test.sh', fail: 'echo failing; exit 3' },
        provision: ['echo provisioned >> /work/provisioned'],
      },
      b: { image: 'tiny', memoryMiB: 192, diskMiB: 32, ports: [{ guest: 8080 }] },
    },
  }),
);
copyFileSync(join(root, 'examples', 'project-vm', 'test.sh'), join(project, 'test.sh'));

after(async () => {
  for (const process of processesNaming(project)) await stopDetached(process, 0);
  rmSync(project, { recursive: true, force: true });
});

describe('project VMs through the CLI', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 600_000,
}, () => {
  it('init writes a starter that loads; bad configs get one line per error, exit 2', async () => {
    const scratch = mkdtempSync('/tmp/vmkit-init-');
    try {
      assert.equal((await vmkit(['init'], { cwd: scratch })).code, 0);
      const listed = await vmkit(['status'], { cwd: scratch });
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(listed.stdout, /^dev: absent/);
      assert.equal((await vmkit(['init'], { cwd: scratch })).code, 2, 'a second init refuses');
      rmSync(join(scratch, 'vmkit.config.ts'));
      writeFileSync(
        join(scratch, 'vmkit.config.json'),
        JSON.stringify({
          vms: { dev: { memoryMiB: 'lots', colour: 1, sync: [{ host: '..', guest: '/x' }] } },
        }),
      );
      const bad = await vmkit(['up'], { cwd: scratch });
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /vms\.dev\.memoryMiB: .*got "lots"/);
      assert.match(bad.stderr, /vms\.dev: unknown field "colour"/);
      writeFileSync(
        join(scratch, 'vmkit.config.json'),
        JSON.stringify({ vms: { dev: { sync: [{ host: '..', guest: '/x' }] } } }),
      );
      const outside = await vmkit(['sync'], { cwd: scratch });
      assert.equal(outside.code, 2);
      assert.match(outside.stderr, /vms\.dev\.sync\.0\.host: \.\. is outside the project/);
      rmSync(join(scratch, 'vmkit.config.json'));
      const none = await vmkit(['status'], { cwd: scratch });
      assert.equal(none.code, 2);
      assert.match(none.stderr, /no vmkit\.config\.ts or vmkit\.config\.json/);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  it('a command against a VM that is down says so and suggests vmkit up; an unknown VM is exit 2', async () => {
    const down = await vmkit(['exec', '--', 'true']);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /VM a is not running \(start it with: vmkit up a\)/);
    const unknown = await vmkit(['up', 'nope']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown VM "nope"/);
  });

  it('up starts the VM in the background; a second up says it is up already', async () => {
    const first = await vmkit(['up']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /VM a is up/);
    assert.equal(readFileSync(join(project, '.vmkit', '.gitignore'), 'utf8'), '*\n');
    const second = await vmkit(['up', 'a']);
    assert.equal(second.code, 0);
    assert.match(second.stderr, /VM a is already up/);
    const [a, b] = await status();
    assert.equal(a?.state, 'running');
    assert.equal(b?.state, 'absent');
    assert.ok((a?.ports['8080'] ?? 0) > 0);
    assert.equal(await guest('cat /work/provisioned'), 'provisioned\n', 'provisioned once');
  });

  it('exec: exit codes, stdout and stderr apart, stdin passed through, output streams live', async () => {
    const failing = await vmkit(['exec', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.equal(failing.code, 7);
    assert.equal(failing.stdout, 'out\n');
    assert.match(failing.stderr, /^err$/m);
    const counted = await vmkit(['exec', 'a', '--', 'wc', '-l'], { input: 'one\ntwo\nthree\n' });
    assert.equal(counted.stdout.trim(), '3');
    assert.equal((await guest('pwd')).trim(), '/work/project', 'runs in the configured folder');
    // The first line arrives while the command still runs.
    const child = spawn(
      process.execPath,
      [cli, 'exec', '--', 'sh', '-c', 'echo first; sleep 4; echo second'],
      {
        cwd: project,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let seen = '';
    let exited = false;
    child.on('exit', () => {
      exited = true;
    });
    await new Promise<void>((resolve) =>
      child.stdout.on('data', (chunk) => {
        seen += chunk;
        if (seen.includes('first')) resolve();
      }),
    );
    assert.equal(exited, false, 'first line seen before the command ended');
    assert.ok(!seen.includes('second'));
    await new Promise((resolve) => child.on('close', resolve));
    assert.equal(seen, 'first\nsecond\n');
  });

  it('Ctrl-C stops the remote command', async () => {
    const interrupted = await runProgram(
      process.execPath,
      [cli, 'exec', '--', 'sh', '-c', 'echo started; sleep 60; echo never'],
      {
        cwd: project,
        timeoutMs: 60_000,
        input: '',
        during: async (_stderr, pid) => {
          await new Promise((resolve) => setTimeout(resolve, 4000));
          process.kill(pid, 'SIGINT');
        },
      },
    );
    assert.equal(interrupted.stdout, 'started\n');
    assert.equal(interrupted.code, 143, 'the remote command ended by SIGTERM');
    assert.equal((await guest('ps | grep -c "[s]leep 60" || true')).trim(), '0');
  });

  it('sync: adds, changes, deletes, keeps modes and symlinks, leaves out excludes and .gitignore', async () => {
    writeSyncTree(project);
    const first = await vmkit(['sync']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /sync \/work\/project \(vmkit\): \d+ sent/);
    checkSyncedTree(await guest(LIST_SYNCED_TREE), ['test.sh']);

    const unchanged = await vmkit(['sync']);
    assert.match(unchanged.stderr, /0 sent .*, 0 deleted/);
    changeSyncTree(project);
    const second = await vmkit(['sync']);
    assert.match(second.stderr, /1 sent .*, 1 deleted/);
    assert.match(second.stderr, /src\/deep\/tool\.sh/);
    assert.equal(await guest(CHECK_CHANGED_TREE), CHANGED_TREE);
  });

  it('test syncs and runs the root-only suite, streaming; exit codes propagate; the suite refuses the host', async () => {
    const passed = await vmkit(['test']);
    assert.equal(passed.code, 0, passed.stderr + passed.stdout);
    assert.match(passed.stdout, /ok - tmpfs mount\nok - ext2 on a loop device\n0 failed/);
    const failed = await vmkit(['run-cmd', 'fail']);
    assert.equal(failed.code, 3);
    assert.match(failed.stdout, /failing/);
    const unknown = await vmkit(['run-cmd', 'nope']);
    assert.equal(unknown.code, 2);
    const onHost = await runProgram('sh', ['test.sh'], { cwd: project });
    assert.equal(onHost.code, 3, 'the suite passes only inside the VM');
  });

  it('quick syncs and runs the default command; provision runs the list again and saves clean again', async () => {
    const quick = await vmkit(['quick']);
    assert.equal(quick.code, 0, quick.stderr + quick.stdout);
    assert.match(quick.stdout, /ok - tmpfs mount\n/);
    const before = await guest('cat /work/provisioned');
    const cleanBefore = (await status()).find((vm) => vm.name === 'a')?.snapshots ?? [];
    assert.ok(cleanBefore.includes('clean'), JSON.stringify(cleanBefore));
    const provision = await vmkit(['provision']);
    assert.equal(provision.code, 0, provision.stderr);
    assert.equal(await guest('cat /work/provisioned'), `${before}provisioned\n`);
    assert.match(provision.stderr, /clean/);
    const badName = await vmkit(['provision', 'nope']);
    assert.equal(badName.code, 2, badName.stderr);
  });

  it('two terminals run exec at once', async () => {
    const script = 'cut -d" " -f1 /proc/uptime; sleep 3; cut -d" " -f1 /proc/uptime';
    const [one, two] = await Promise.all([
      vmkit(['exec', '--', 'sh', '-c', script]),
      vmkit(['exec', '--', 'sh', '-c', script]),
    ]);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(two.code, 0, two.stderr);
    const [startOne, endOne] = one.stdout.trim().split('\n').map(Number);
    const [startTwo, endTwo] = two.stdout.trim().split('\n').map(Number);
    assert.ok(
      (startTwo as number) < (endOne as number) && (startOne as number) < (endTwo as number),
      'they overlapped',
    );
  });

  it('snapshot save and restore; reset returns to clean', async () => {
    await guest('echo before > /work/project/state.txt');
    const saved = await vmkit(['snapshot', 'save', 'clean']);
    assert.equal(saved.code, 0, saved.stderr);
    await guest(
      'echo after > /work/project/state.txt; echo junk > /work/project/junk; echo ram > /tmp/in-ram',
    );
    const reset = await vmkit(['reset']);
    assert.equal(reset.code, 0, reset.stderr);
    assert.match(reset.stderr, /reset to clean in/);
    assert.equal(
      (await guest('cat state.txt; test -e junk || echo no-junk; test -e /tmp/in-ram || echo no-ram')).trim(),
      'before\nno-junk\nno-ram',
    );
    assert.deepEqual((await status())[0]?.snapshots, ['clean']);
    const missing = await vmkit(['snapshot', 'restore', 'nope']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /no snapshot "nope" \(it has: clean\)/);
  });

  it('two VMs at once, with distinct ports; a taken port is exit 2', async () => {
    const upB = await vmkit(['up', 'b']);
    assert.equal(upB.code, 0, upB.stderr);
    const [a, b] = await status();
    assert.equal(a?.state, 'running');
    assert.equal(b?.state, 'running');
    assert.notEqual(a?.ports['8080'], b?.ports['8080']);
    assert.equal((await vmkit(['exec', 'b', '--', 'hostname'])).stdout.trim(), 'b');
    assert.equal((await vmkit(['down', 'b'])).code, 0);
    // A port held by someone else, fixed in the config, is refused.
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const held = (holder.address() as { port: number }).port;
    const config = JSON.parse(readFileSync(join(project, 'vmkit.config.json'), 'utf8'));
    config.vms.b.ports = [{ guest: 8080, host: held }];
    writeFileSync(join(project, 'vmkit.config.json'), JSON.stringify(config));
    const clash = await vmkit(['up', 'b']);
    holder.close();
    assert.equal(clash.code, 2);
    assert.match(clash.stderr, new RegExp(`host port ${held} \\(for guest port 8080\\) is already taken`));
  });

  it("shell: a root shell on a pseudo-terminal in the guest, with the host terminal's window size", async () => {
    const piped = await vmkit(['shell'], { input: 'tty\nid -u\nexit 4\n', timeoutMs: 120_000 });
    assert.equal(piped.code, 4, piped.stderr);
    assert.match(piped.stdout, /\/dev\/pts\/\d+/);
    // A real terminal on the host side (util-linux script), sized 31x97: the guest sees that size.
    const sized = await runProgram(
      'sh',
      [
        '-c',
        `(sleep 8; printf 'stty size\\n'; sleep 4; printf 'exit\\n'; sleep 2) | script -qc "stty rows 31 cols 97; ${process.execPath} ${cli} shell" /dev/null`,
      ],
      { cwd: project, timeoutMs: 120_000 },
    );
    assert.match(sized.stdout, /31 97/);
  });

  it('a killed QEMU is reported with its console tail, and up recovers it with its disk', async () => {
    // What the guest still holds in its page cache dies with QEMU: only what reached the disk stays.
    await guest('echo last words on the console > /dev/console; sync');
    process.kill(vmmPid('a'), 'SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, 500));
    const [a] = await status();
    assert.equal(a?.state, 'crashed');
    assert.match(a?.consoleTail ?? '', /last words on the console/);
    const refused = await vmkit(['exec', '--', 'true']);
    assert.match(refused.stderr, /not running \(start it with: vmkit up a\)/);
    const recovered = await vmkit(['up']);
    assert.equal(recovered.code, 0, recovered.stderr);
    assert.match(recovered.stderr, /its QEMU died since it was started; console tail:/);
    assert.match(recovered.stderr, /recovered after QEMU died/);
    assert.equal((await guest('cat state.txt')).trim(), 'before');
  });

  it('down and up keep the disk; destroy removes everything', async () => {
    await guest('echo persisted > /work/kept');
    const provisioned = await guest('cat /work/provisioned');
    assert.equal((await vmkit(['down'])).code, 0);
    assert.equal((await status())[0]?.state, 'stopped');
    assert.equal((await vmkit(['up'])).code, 0);
    assert.equal((await guest('cat /work/kept')).trim(), 'persisted');
    assert.equal(await guest('cat /work/provisioned'), provisioned, 'not provisioned again');
    const config = JSON.parse(readFileSync(join(project, 'vmkit.config.json'), 'utf8'));
    config.vms.a.provision = ['echo changed >> /work/provisioned'];
    writeFileSync(join(project, 'vmkit.config.json'), JSON.stringify(config));
    const again = await vmkit(['up']);
    assert.match(again.stderr, /provision: echo changed/);
    assert.equal(await guest('cat /work/provisioned'), `${provisioned}changed\n`, 'changed provisioning ran');
    const refused = await vmkit(['destroy']);
    assert.equal(refused.code, 2, 'no --yes and no terminal: nothing destroyed');
    assert.equal((await vmkit(['destroy', '--yes'])).code, 0);
    assert.ok(!existsSync(join(project, '.vmkit', 'a')));
    assert.deepEqual(
      processesNaming(join(project, '.vmkit')).map((process) => process.program),
      [],
      'no QEMU or hub left',
    );
  });
});

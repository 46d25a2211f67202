// Project VMs from a program (openProjectVm), on a real tiny guest: the same VM the CLI drives,
// through the public API: up, exec, succeed, sync, snapshot, restore, reset, status, down, destroy.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  AgentLentError,
  CommandFailedError,
  ConfigError,
  OwnedElsewhereError,
  openProjectVm,
  type ProjectVmHandle,
} from '../../src/index.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { waitWithin } from '../../src/util/time.js';
import { cli, lacks, runProgram } from '../helpers.js';

// Short: the VM's sockets live under the project's .vmkit/ and socket paths stop at 107 bytes.
const project = mkdtempSync('/tmp/vmkit-papi-');
writeFileSync(
  join(project, 'vmkit.config.json'),
  JSON.stringify({
    vms: {
      box: {
        image: 'tiny',
        memoryMiB: 192,
        diskMiB: 32,
        sync: [{ host: '.', guest: '/work/project' }],
        provision: ['echo provisioned > /work/provisioned'],
      },
    },
  }),
);
writeFileSync(join(project, 'hello.txt'), 'hello from the host\n');

after(async () => {
  for (const process of processesNaming(project)) await stopDetached(process, 0);
  rmSync(project, { recursive: true, force: true });
});

describe('project VMs through the public API', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 600_000,
}, () => {
  let vm: ProjectVmHandle;

  it('opens the VM of the config around a folder; an unknown VM or a folder without one is a ConfigError', async () => {
    vm = await openProjectVm({ cwd: project });
    assert.equal(vm.name, 'box');
    assert.equal(vm.dir, join(project, '.vmkit', 'box'));
    await assert.rejects(openProjectVm({ cwd: project, vm: 'nope' }), ConfigError);
    await assert.rejects(openProjectVm({ cwd: '/' }), /no vmkit\.config\.ts or vmkit\.config\.json/);
    assert.equal((await vm.status()).state, 'absent');
  });

  it('up boots and provisions it; exec and succeed run in its working folder', async () => {
    const lines: string[] = [];
    const progress = await openProjectVm({ cwd: project, log: (line) => lines.push(line) });
    const result = await progress.up();
    assert.equal(result.already, false);
    assert.ok(lines.length > 0, 'up reports progress to log');
    assert.equal((await vm.up()).already, true);
    assert.equal(await vm.succeed(['cat', '/work/provisioned']), 'provisioned\n');
    assert.equal(await vm.succeed(['pwd']), '/work/project\n');
    const failed = await vm.exec(['sh', '-c', 'echo out; echo err >&2; exit 3']);
    assert.deepEqual(
      [failed.status, failed.stdout.toString(), failed.stderr.toString()],
      [3, 'out\n', 'err\n'],
    );
    await assert.rejects(vm.succeed(['false']), CommandFailedError);
    const status = await vm.status();
    assert.equal(status.state, 'running');
    assert.ok(status.snapshots.includes('clean'), 'up saved the clean snapshot');
  });

  it('sync copies the host tree; the CLI sees the same VM', async () => {
    const reports = await vm.sync();
    assert.equal(reports.length, 1);
    assert.ok((reports[0]?.sent ?? 0) >= 2, JSON.stringify(reports));
    assert.equal(await vm.succeed(['cat', 'hello.txt']), 'hello from the host\n');
    const fromCli = await runProgram(process.execPath, [cli, 'exec', '--', 'cat', 'hello.txt'], {
      cwd: project,
      timeoutMs: 120_000,
    });
    assert.equal(fromCli.code, 0, fromCli.stderr);
    assert.equal(fromCli.stdout, 'hello from the host\n');
  });

  it('machine() is the running VM as a Machine; the CLI is refused while it holds the agent, served after', async () => {
    const machine = await vm.machine();
    try {
      assert.equal(await machine.succeed('cat /work/provisioned'), 'provisioned\n');
      await machine.waitForFile('/work/project/hello.txt', { timeoutMs: 10_000 });
      const copied = join(project, 'copied-back.txt');
      await machine.copyFromVm('/work/project/hello.txt', copied);
      assert.equal(readFileSync(copied, 'utf8'), 'hello from the host\n');
      assert.match(machine.getConsoleLog(), /\S/, 'its console holds what the VM printed before');
      await machine.succeed('echo console-mark-box > /dev/console');
      await machine.waitForConsoleText('console-mark-box', { timeoutMs: 10_000 });
      // The hub lent the agent: the CLI and a second machine are refused, naming the holder.
      const fromCli = await runProgram(process.execPath, [cli, 'exec', '--', 'true'], {
        cwd: project,
        timeoutMs: 60_000,
      });
      assert.notEqual(fromCli.code, 0);
      assert.match(fromCli.stderr, new RegExp(`held by a Machine in process ${process.pid}`));
      await assert.rejects(vm.machine({ timeoutMs: 1000 }), /already held by a Machine/);
      // down would stop the VM under the machine's writes, unsynced: it refuses, and changes nothing.
      await assert.rejects(vm.down(), AgentLentError);
      assert.equal((await vm.status()).state, 'running');
      // What would change the VM's life is its owner's: the error says which command does it.
      await assert.rejects(machine.shutdown(), (error: Error) => {
        assert.ok(error instanceof OwnedElsewhereError, String(error));
        assert.match(
          error.message,
          /shutdown\(\) is not for an attached machine: it is project VM box \(vmkit down/,
        );
        return true;
      });
      await assert.rejects(machine.snapshot(), OwnedElsewhereError);
      await assert.rejects(machine.forwardPort({ guestPort: 22 }), OwnedElsewhereError);
    } finally {
      await machine.close();
    }
    assert.equal(await vm.succeed(['echo', 'back']), 'back\n', 'the hub took its agent back');
    assert.equal((await vm.status()).state, 'running', 'closing the machine left the VM running');
    const again = await vm.machine();
    assert.equal(await again.succeed('hostname'), 'box\n');
    await again.close();
  });

  it("a process killed while its Machine holds the VM's agent: the hub takes it back at once", async () => {
    let refused = '';
    const holder = await runProgram(
      process.execPath,
      ['--import', 'tsx', 'test/fixtures/hold-project-machine.ts', project],
      {
        timeoutMs: 120_000,
        during: async (stderr, pid) => {
          await waitWithin<void>(60_000, 'the holder to hold the VM', (resolve) => {
            const poll = setInterval(() => stderr().includes('held') && resolve(), 50);
            return () => clearInterval(poll);
          });
          refused = (
            await runProgram(process.execPath, [cli, 'exec', '--', 'true'], {
              cwd: project,
              timeoutMs: 60_000,
            })
          ).stderr;
          process.kill(pid, 'SIGKILL'); // mid-command: `sleep 600` runs in the guest
        },
      },
    );
    assert.equal(holder.code, null, holder.stderr);
    assert.match(refused, /held by a Machine in process \d+/);
    assert.equal(await vm.succeed(['echo', 'back']), 'back\n');
  });

  it('snapshot, restore and reset put the guest back', async () => {
    await vm.succeed(['sh', '-c', 'echo one > /root/mark']);
    await vm.snapshot('one');
    await vm.succeed(['sh', '-c', 'echo two > /root/mark']);
    await vm.restore('one');
    assert.equal(await vm.succeed(['cat', '/root/mark']), 'one\n');
    assert.deepEqual((await vm.snapshots()).map((snapshot) => snapshot.label).sort(), ['clean', 'one']);
    await vm.reset();
    assert.equal((await vm.exec(['test', '-e', '/root/mark'])).status, 1, 'reset went back to clean');
    await assert.rejects(vm.restore('../x'), ConfigError);
  });

  it('down stops it, keeping its disks; destroy removes them', async () => {
    assert.equal(await vm.down(), true);
    assert.equal(await vm.down(), false);
    assert.equal((await vm.status()).state, 'stopped');
    await assert.rejects(vm.exec(['true']), /VM box is not running/);
    await vm.destroy();
    assert.equal(existsSync(vm.dir), false);
    assert.equal(processesNaming(project).length, 0, 'no process of the VM is left');
  });
});

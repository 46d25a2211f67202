// State folders, sockets and files stay private whatever the umask: under `umask 000`, a machine,
// a switch, a switch daemon, a project VM (`vmkit up`) and a fleet folder leave nothing that
// another local user may enter, connect to or write (QMP runs `migrate exec:…` as the owner).
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Fleet } from '../../src/fleet/fleet.js';
import { networkDir } from '../../src/fleet/vmm/vm.js';
import { startMachine } from '../../src/machines.js';
import { VirtualSwitch } from '../../src/network/switch.js';
import { ensureSwitchDaemon, stopSwitchDaemon } from '../../src/network/switch-daemon.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { Runtime } from '../../src/runtime/runtime.js';
import { alive, cli, lacks, runProgram } from '../helpers.js';

/**
 * Every entry under `root` (itself included) that another user could use: a folder or socket
 * with any group or other bit, a file that group or others may write.
 */
function offenders(root: string): string[] {
  const found: string[] = [];
  const visit = (path: string) => {
    let info: ReturnType<typeof lstatSync>;
    try {
      info = lstatSync(path);
    } catch {
      return; // removed while we looked (a socket renamed, a .part file)
    }
    const mode = info.mode & 0o7777;
    const where = `${path} ${mode.toString(8).padStart(4, '0')}`;
    if (info.isDirectory()) {
      if (mode & 0o077) found.push(`folder ${where}`);
      let names: string[] = [];
      try {
        names = readdirSync(path);
      } catch {}
      for (const name of names) visit(join(path, name));
    } else if (info.isSocket()) {
      if (mode & 0o077) found.push(`socket ${where}`);
    } else if (info.isFile() && mode & 0o022) {
      found.push(`file ${where}`);
    }
  };
  visit(root);
  return found;
}

/** The /dev/shm files a process holds open, with their modes (through /proc: they may be unlinked). */
function ramFiles(pid: number): Array<{ path: string; mode: number }> {
  const found: Array<{ path: string; mode: number }> = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    const path = readlinkSync(`/proc/${pid}/fd/${fd}`);
    if (path.startsWith('/dev/shm/'))
      found.push({ path, mode: statSync(`/proc/${pid}/fd/${fd}`).mode & 0o7777 });
  }
  return found;
}

const scratch = mkdtempSync('/tmp/vmkit-modes-');
const asRoot = process.getuid?.() === 0;
/** Prints how connecting to $QMP went: the greeting's first word, or the error code. */
const CONNECT = `const s = require('node:net').connect(process.env.QMP);
s.once('data', (d) => { console.log(String(d).slice(0, 6)); s.destroy(); });
s.once('error', (e) => console.log(e.code));`;
let umask: number;

before(() => {
  umask = process.umask(0);
});

after(async () => {
  process.umask(umask);
  for (const stray of processesNaming(scratch)) await stopDetached(stray, 0);
  rmSync(scratch, { recursive: true, force: true });
});

describe('private state under umask 000', { timeout: 600_000 }, () => {
  it('a machine on a switch: run folder, machine folder, sockets; closing the runtime ends its QEMU', async () => {
    const runtime = new Runtime({ root: join(scratch, 'run', 'vmkit') });
    const runDir = runtime.runDir;
    let pid = 0;
    try {
      const network = runtime.own(await VirtualSwitch.create('lan', join(runtime.runDir, 'lan.sock')));
      // fresh: a boot, whose RAM file QEMU makes in /dev/shm (a start from the boot cache maps the
      // entry's, in the private snapshot store).
      const machine = await startMachine({
        name: 'm',
        runtime,
        fresh: true,
        networks: [{ switch: network }],
      });
      pid = machine.pid;
      assert.equal(await machine.succeed('echo up'), 'up\n');
      // Guest RAM: QEMU made the file in /dev/shm (unlinked since, still mapped); no one else may open it.
      const ram = ramFiles(machine.pid);
      assert.ok(ram.length > 0, 'QEMU holds its RAM file');
      for (const file of ram) assert.equal(file.mode & 0o077, 0, `${file.path} ${file.mode.toString(8)}`);
      assert.deepEqual(offenders(runtime.root), []);
      // The machine is left running: closing its runtime ends it (README, "Runtime").
    } finally {
      await runtime.close();
    }
    assert.ok(pid > 0 && !alive(pid), `QEMU ${pid} ended with its runtime`);
    assert.equal(existsSync(runDir), false, 'the run folder is removed');
  });

  it('a switch daemon in a folder of its own', async () => {
    const dir = join(scratch, 'switches', 'one');
    await ensureSwitchDaemon(dir, 'one');
    try {
      assert.deepEqual(offenders(join(scratch, 'switches')), []);
    } finally {
      await stopSwitchDaemon(dir);
    }
  });

  it('a fleet folder, its database and a tenant switch', async () => {
    const dir = join(scratch, 'fleet');
    const fleet = new Fleet({ dir });
    try {
      fleet.createTenant({ id: 't1', subnet: '10.79.0.0/24' });
      await ensureSwitchDaemon(networkDir(dir, 't1'), 't1');
      assert.deepEqual(offenders(dir), []);
    } finally {
      await stopSwitchDaemon(networkDir(dir, 't1'));
      await fleet.close();
    }
  });

  it('a project VM brought up by vmkit up', { skip: lacks('snapshot') }, async () => {
    // The project folder is the user's (mkdtemp: 0700); what vmkit makes is .vmkit/.
    const folder = mkdtempSync(join(scratch, 'p'));
    writeFileSync(
      join(folder, 'vmkit.config.json'),
      JSON.stringify({ vms: { a: { image: 'tiny', memoryMiB: 192, diskMiB: 32 } } }),
    );
    // The CLI inherits this process's umask of 000.
    const vmkit = (args: string[]) =>
      runProgram(process.execPath, [cli, ...args], { cwd: folder, input: '', timeoutMs: 240_000 });
    try {
      const up = await vmkit(['up']);
      assert.equal(up.code, 0, up.stderr);
      const exec = await vmkit(['exec', '--', 'echo', 'in']);
      assert.equal(exec.code, 0, exec.stderr);
      if (asRoot) {
        // The attack itself: another local user, in a project folder they may enter, tries QMP.
        chmodSync(scratch, 0o755);
        chmodSync(folder, 0o755);
        const probe = await runProgram(
          'setpriv',
          ['--reuid=65534', '--regid=65534', '--clear-groups', '--', process.execPath, '-e', CONNECT],
          { input: '', timeoutMs: 30_000, env: { QMP: join(folder, '.vmkit', 'a', 'run', 'qmp.sock') } },
        );
        assert.equal(
          probe.stdout.trim(),
          'EACCES',
          `another user reached QMP: ${probe.stdout}${probe.stderr}`,
        );
      }
      assert.deepEqual(offenders(join(folder, '.vmkit')), []);
    } finally {
      await vmkit(['destroy', '--yes']);
    }
  });
});

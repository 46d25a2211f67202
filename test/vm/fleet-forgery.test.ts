// As root, a fleet VMM runs as its tenant's uid and owns its instance folder: a compromised VMM
// can rewrite anything there. Root must act on nothing it finds in that folder: here the tenant's
// uid forges the VMM's record (to name a root process), its cgroups (to name another folder),
// and leaves links where root writes, then the operator stops, starts and destroys the instance.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Fleet } from '../../src/fleet/fleet.js';
import { GUEST_READ_SECRETS } from '../../src/fleet/vmm/secrets-disk.js';
import { instanceDir, recordsDir, vmProcesses } from '../../src/fleet/vmm/vm.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { processStartTicks } from '../../src/runtime/reaper.js';
import { alive, lacks, runCli, runProgram } from '../helpers.js';

const asRoot = process.getuid?.() === 0;
const dir = mkdtempSync('/tmp/vmkit-ff-');
// At the end of the file, also when the describe is skipped (an ordinary user): its after() is not run then.
after(() => rmSync(dir, { recursive: true, force: true }));
const fleetArgs = ['fleet', '--fleet-dir', dir];
const path = 't/p/i1';

describe('a tenant uid forging what root acts on', {
  skip: (!asRoot && 'the jail (a tenant uid) needs root') || lacks('detached') || lacks('snapshot'),
  timeout: 600_000,
}, () => {
  let fleet: Fleet;
  let uid: number;
  let folder: string;
  /** A root process vmkit never started, and a folder that is no cgroup of any VMM. */
  let victim: ChildProcess;
  let victimFolder: string;
  let victimFile: string;

  /**
   * Runs `script` as the tenant's uid, as a compromised VMM would (no capabilities, no groups), in
   * its folder: the VMM reaches it through its jail, not through the fleet's private folders
   * above it, so the script names what is in it by relative paths.
   */
  const asTenant = (script: string, input?: string) =>
    runProgram(
      'setpriv',
      [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', 'sh', '-c', script, 'sh'],
      { ...(input === undefined ? {} : { input }), timeoutMs: 10_000, cwd: folder },
    );
  const forge = async (name: string, value: unknown) => {
    // Root's file in the tenant's folder: the tenant cannot write it, but can replace it.
    const done = await asTenant(`cat > ${name}.new && mv -f ${name}.new ${name}`, JSON.stringify(value));
    assert.equal(done.code, 0, `the tenant could not write ${name}: ${done.stderr}`);
  };
  const assertVictimsUntouched = () => {
    assert.ok(alive(victim.pid as number), 'the root process named by the forged record was killed');
    assert.equal(victim.signalCode, null);
    assert.ok(existsSync(victimFolder), 'the folder named by the forged cgroups was removed');
    assert.equal(readFileSync(victimFile, 'utf8'), 'precious\n', 'root wrote through a link of the tenant');
    assert.equal(statSync(victimFile).uid, 0, 'root gave its file to the tenant');
  };
  const vmmOf = () => {
    const [vmm] = vmProcesses(folder);
    assert.ok(vmm, 'no VMM');
    return vmm;
  };

  before(async () => {
    chmodSync(dir, 0o755); // as in the jail, where the path to its folder is open to the VMM's uid
    fleet = new Fleet({ dir });
    fleet.createTenant({ id: 't', subnet: '10.73.0.0/24', secrets: { K: 'v' } });
    await fleet.createPool({ tenant: 't', id: 'p', memoryMiB: 128 });
    await fleet.createInstance('t/p', 'i1');
    folder = instanceDir(dir, fleet.instance(path).seq);
    uid = fleet.store.tenant('t').uid;
    victim = spawn('sleep', ['1000']);
    victimFolder = mkdtempSync('/tmp/vmkit-ff-victim-');
    victimFile = join(victimFolder, 'file');
    writeFileSync(victimFile, 'precious\n', { mode: 0o644 });
  });

  after(async () => {
    await fleet.destroyTenant('t').catch(() => {});
    await fleet.close();
    for (const leftover of processesNaming(dir)) await stopDetached(leftover, 0);
    victim.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    rmSync(victimFolder, { recursive: true, force: true });
  });

  it('stop ends the real VMM, never the pid or the cgroup a forged record names', async () => {
    assert.equal((await fleet.start(path)).state, 'Running');
    const vmm = vmmOf();
    // What the fleet acts on is out of the tenant's reach.
    const records = recordsDir(folder);
    assert.equal(lstatSync(records).uid, 0);
    assert.equal(lstatSync(records).mode & 0o777, 0o700);
    const intoRecords = await asTenant(`echo '{}' > ${join(records, 'vmm.json')}`);
    assert.notEqual(intoRecords.code, 0, 'the tenant wrote into the records folder');
    // The forged record names the root process with its true start time and a marker on its
    // command line: the check of start time and command line alone would pass it.
    const pid = victim.pid as number;
    const forged = {
      pid,
      startTicks: processStartTicks(pid),
      marker: '1000',
      program: 'sleep',
      startedAt: '',
    };
    await forge('vmm.json', forged);
    await forge('cgroups.json', { groups: [victimFolder], warnings: [] });
    const stopped = await runCli([...fleetArgs, 'instance', 'stop', path]);
    assert.equal(stopped.code, 0, stopped.stderr);
    assertVictimsUntouched();
    assert.equal(fleet.instance(path).state, 'Stopped');
    assert.ok(!alive(vmm.pid), 'the real VMM still runs');
    assert.deepEqual(processesNaming(folder), [], 'a process of the instance is left');
  });

  it('start, sleep, wake and destroy write through no link and signal no forged pid', async () => {
    // Links where root writes into the folder (a later start writes the secrets disk and the
    // metadata document through their partial names; QEMU's log is opened for appending).
    const links = ['secrets.img.part', 'metadata.json.part', 'qemu.log'];
    const made = await asTenant(links.map((name) => `ln -sfn ${victimFile} ${name}`).join('; '));
    assert.equal(made.code, 0, made.stderr);
    assert.equal((await fleet.start(path)).state, 'Running');
    assertVictimsUntouched();
    const secrets = await fleet.exec(path, ['sh', '-c', GUEST_READ_SECRETS]);
    assert.match(secrets.stdout.toString(), /"K":"v"/, 'the secrets disk lost its secrets');
    // The jail's mount point is root's, but empty in the tenant's folder: it can go, and a link
    // in its place would aim the next jail's mounts (at wake) elsewhere.
    const linked = await asTenant(`rmdir jail && ln -s ${victimFolder} jail`);
    assert.equal(linked.code, 0, linked.stderr);
    // An empty start time and marker used to match any process.
    const empty = { pid: victim.pid, startTicks: '', marker: '', program: '', startedAt: '' };
    await forge('vmm.json', empty);
    await forge('cgroups.json', { groups: [victimFolder], warnings: [] });
    const { pid: before } = vmmOf();
    assert.equal((await fleet.sleep(path)).state, 'Sleeping');
    assertVictimsUntouched();
    assert.ok(!alive(before));
    await forge('vmm.json', empty);
    assert.equal((await fleet.wake(path)).state, 'Running');
    const check = await fleet.exec(path, ['true']);
    assert.equal(check.status, 0);
    await forge('vmm.json', empty);
    await forge('cgroups.json', { groups: [victimFolder], warnings: [] });
    const { pid: woken } = vmmOf();
    const destroyed = await runCli([...fleetArgs, 'instance', 'destroy', path]);
    assert.equal(destroyed.code, 0, destroyed.stderr);
    assertVictimsUntouched();
    assert.ok(!alive(woken), 'the real VMM still runs');
    assert.ok(!existsSync(folder) && !existsSync(recordsDir(folder)), 'the folder or its records are left');
    assert.deepEqual(processesNaming(folder), []);
  });
});

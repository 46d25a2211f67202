// Project VMs from media through the CLI, on real guests: an ISO installs onto an empty disk by
// console steps and the installed disk is the base from then on (provision once, clean saved,
// reset, down/up); a { disk } image boots through an overlay and its file is never written.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { cli, lacks, runProgram } from '../helpers.js';
import { installerIso } from './console-targets.js';

// Short: the VMs' sockets live under the project's .vmkit/ and socket paths stop at 107 bytes.
const project = mkdtempSync('/tmp/vmkit-media-');
const vmkit = (args: string[], timeoutMs = 300_000) =>
  runProgram(process.execPath, [cli, ...args], { cwd: project, input: '', timeoutMs });
const guest = async (vm: string, script: string) => {
  const result = await vmkit(['exec', vm, '--', 'sh', '-c', script]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
};
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
const snapshots = async (vm: string) => {
  const result = await vmkit(['status', vm, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return (JSON.parse(result.stdout) as Array<{ snapshots: string[] }>)[0]?.snapshots;
};
/** Reads 16 bytes at 48 MiB into the root disk: past the installed image, a place for a marker. */
const ROOT_MARK_READ = 'dd if=/dev/vda bs=1M skip=48 count=1 2>/dev/null | head -c 16';
const writeRootMark = (text: string) =>
  `printf %-16s ${text} | dd of=/dev/vda bs=1M seek=48 conv=fsync 2>/dev/null`;

const config = (vms: Record<string, unknown>) =>
  writeFileSync(join(project, 'vmkit.config.json'), JSON.stringify({ vms }));

after(async () => {
  for (const process of processesNaming(project)) await stopDetached(process, 0);
  rmSync(project, { recursive: true, force: true });
});

describe('project VMs from media', { skip: lacks('detached') || lacks('snapshot'), timeout: 900_000 }, () => {
  let systemHash: string;

  before(async () => {
    const media = await installerIso(project);
    systemHash = sha256(media.system);
    writeFileSync(
      join(project, 'install.json'),
      JSON.stringify([
        { name: 'installer up', phase: 'installer', expect: 'vmkit: tiny image up', timeoutMs: 240_000 },
        {
          name: 'write the system',
          settleMs: 500,
          sendLine:
            'grep -q vmkit.mark=installer /proc/cmdline && dd if=/install/system.img of=/dev/vda bs=1M conv=fsync && echo "installed-$((6*7))"',
        },
        { name: 'written', expect: 'installed-42', timeoutMs: 120_000 },
        { name: 'power off', sendLine: 'poweroff -f' },
      ]),
    );
    config({
      inst: {
        image: { iso: 'installer.iso', install: 'install.json', diskMiB: 64, agent: 'tiny' },
        memoryMiB: 256,
        diskMiB: 32,
        provision: ['echo provisioned >> /work/provisioned'],
      },
      disk: { image: { disk: 'system.img', agent: 'tiny' }, memoryMiB: 192, diskMiB: 32 },
      missing: { image: { disk: 'nope.img', agent: 'tiny' } },
      broken: {
        image: {
          iso: 'installer.iso',
          install: [{ name: 'a prompt that never comes', expect: 'Partition disks?', timeoutMs: 8000 }],
          agent: 'tiny',
        },
        diskMiB: 16,
      },
      console: {
        image: { disk: 'system.img', readyWhen: 'vmkit: tiny image up' },
        memoryMiB: 192,
        diskMiB: 16,
      },
    });
  });

  it('bad media input: one line naming the value, exit 2, before any QEMU', async () => {
    const missing = await vmkit(['up', 'missing']);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /^vmkit: vms\.missing\.image\.disk: cannot use \/.*\/nope\.img: ENOENT\n$/);
    const noAgent = await vmkit(['exec', 'console', '--', 'true']);
    assert.equal(noAgent.code, 2, noAgent.stderr);
    assert.match(
      noAgent.stderr,
      /^vmkit: VM console boots media without vmkit's agent .*exec.* need it; .*\n$/,
    );
    const good = readFileSync(join(project, 'vmkit.config.json'), 'utf8');
    try {
      config({ bare: { image: { iso: 'installer.iso' } } });
      const bare = await vmkit(['up', 'bare']);
      assert.equal(bare.code, 2, bare.stderr);
      assert.match(
        bare.stderr,
        /\nvms\.bare\.image\.install: must be a list of console steps or a \.json file/,
      );
      config({ prov: { image: { disk: 'system.img' }, provision: ['true'] } });
      const prov = await vmkit(['up', 'prov']);
      assert.equal(prov.code, 2, prov.stderr);
      assert.match(
        prov.stderr,
        /\nvms\.prov\.provision: needs vmkit's agent in the guest \(set image\.agent\)\n$/,
      );
      config({ steps: { image: { iso: 'installer.iso', install: 'absent.json', agent: 'tiny' } } });
      const steps = await vmkit(['up', 'steps']);
      assert.equal(steps.code, 2, steps.stderr);
      assert.match(
        steps.stderr,
        /^vmkit: vms\.steps\.image\.install: steps file .*absent\.json: cannot read it: ENOENT.*\n$/,
      );
    } finally {
      writeFileSync(join(project, 'vmkit.config.json'), good);
    }
    assert.deepEqual(processesNaming(project), [], 'no QEMU started');
  });

  it('an install that fails names the step with the screen, and leaves no disk and no QEMU', async () => {
    const leftovers = () =>
      readdirSync(join(project, '.vmkit', 'broken')).filter(
        (name) => name.endsWith('.qcow2') || name.includes('installing'),
      );
    const interrupted = await runProgram(process.execPath, [cli, 'up', 'broken'], {
      cwd: project,
      input: '',
      timeoutMs: 120_000,
      during: async (stderr, pid) => {
        while (!/phase main/.test(stderr())) await new Promise((resolve) => setTimeout(resolve, 100));
        process.kill(pid, 'SIGINT');
      },
    });
    assert.equal(interrupted.code, 130, interrupted.stderr);
    assert.deepEqual(leftovers(), [], 'Ctrl-C mid-install leaves no disk');
    assert.deepEqual(processesNaming(join(project, '.vmkit')), [], 'and no QEMU');
    const failed = await vmkit(['up', 'broken']);
    assert.equal(failed.code, 1, failed.stderr);
    assert.match(
      failed.stderr,
      /machine broken: installing from installer\.iso failed: console script failed at step "a prompt that never comes" \(phase main\): timed out after 8000 ms/,
    );
    assert.match(failed.stderr, /the screen:/);
    assert.deepEqual(leftovers(), [], 'no installed or half-installed disk');
    assert.deepEqual(processesNaming(join(project, '.vmkit')), [], 'no QEMU left');
    assert.equal((await vmkit(['destroy', '--yes', 'broken'])).code, 0);
  });

  it('up installs from the ISO by console steps, boots the installed disk, provisions once, saves clean', async () => {
    const up = await vmkit(['up', 'inst'], 600_000);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stderr, /installing from installer\.iso onto a 64 MiB disk/);
    assert.match(up.stderr, /install: inst: phase installer/);
    assert.match(up.stderr, /installed in [\d.]+ s/);
    assert.match(up.stderr, /provision: echo provisioned/);
    assert.match(up.stderr, /saved snapshot clean/);
    assert.match(
      await guest('inst', 'cat /proc/cmdline'),
      /vmkit\.mark=installed/,
      'booted the installed disk',
    );
    assert.equal(await guest('inst', 'cat /work/provisioned'), 'provisioned\n');
    assert.deepEqual(await snapshots('inst'), ['clean']);
    assert.match(
      readFileSync(join(project, '.vmkit', 'inst', 'install-console.log'), 'utf8'),
      /installed-42/,
    );
  });

  it('reset returns to the post-provisioning state; down/up keeps the installed disk and its changes', async () => {
    await guest('inst', `echo dirty > /work/dirty && ${writeRootMark('before-reset')}`);
    const reset = await vmkit(['reset', 'inst']);
    assert.equal(reset.code, 0, reset.stderr);
    assert.equal(
      await guest('inst', 'ls /work/dirty 2>&1 || true'),
      'ls: /work/dirty: No such file or directory\n',
    );
    assert.equal((await guest('inst', ROOT_MARK_READ)).replace(/\0/g, ''), '', 'the root disk is back too');
    await guest('inst', writeRootMark('kept'));
    assert.equal((await vmkit(['down', 'inst'])).code, 0);
    const up = await vmkit(['up', 'inst']);
    assert.equal(up.code, 0, up.stderr);
    assert.doesNotMatch(
      up.stderr,
      /installing|provision:|saved snapshot clean/,
      'no install, provision or new clean',
    );
    assert.match(await guest('inst', 'cat /proc/cmdline'), /vmkit\.mark=installed/);
    assert.equal((await guest('inst', ROOT_MARK_READ)).trim(), 'kept', 'the root disk kept its change');
    assert.equal(await guest('inst', 'cat /work/provisioned'), 'provisioned\n', 'provisioned once');
  });

  it('changed provision commands run on the next up and clean is saved after them; changed install media are refused', async () => {
    const current = JSON.parse(readFileSync(join(project, 'vmkit.config.json'), 'utf8'));
    current.vms.inst.provision.push('echo again >> /work/provisioned');
    writeFileSync(join(project, 'vmkit.config.json'), JSON.stringify(current));
    const up = await vmkit(['up', 'inst']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stderr, /provision: echo again[\s\S]*saved snapshot clean/);
    await guest('inst', 'echo dirty > /work/dirty');
    assert.equal((await vmkit(['reset', 'inst'])).code, 0);
    assert.equal(
      await guest('inst', 'cat /work/provisioned; test -e /work/dirty || echo no-dirt'),
      'provisioned\nprovisioned\nagain\nno-dirt\n',
    );
    assert.equal((await vmkit(['down', 'inst'])).code, 0);
    current.vms.inst.image.diskMiB = 128;
    writeFileSync(join(project, 'vmkit.config.json'), JSON.stringify(current));
    const changed = await vmkit(['up', 'inst']);
    assert.equal(changed.code, 2, changed.stderr);
    assert.match(
      changed.stderr,
      /^vmkit: vms\.inst\.image: VM inst was installed with other media or steps; vmkit destroy inst to install again\n$/,
    );
  });

  it('a { disk } image boots through an overlay: the file is never written', async () => {
    const up = await vmkit(['up', 'disk']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(await guest('disk', 'cat /proc/cmdline'), /vmkit\.mark=installed/);
    await guest('disk', 'dd if=/dev/zero of=/dev/vda bs=64k count=4 conv=fsync 2>/dev/null');
    assert.equal(
      await guest('disk', 'head -c 262144 /dev/vda | tr -d "\\0" | wc -c'),
      '0\n',
      'the guest wrote',
    );
    assert.deepEqual(await snapshots('disk'), ['clean'], 'clean saved after the first boot');
    assert.equal((await vmkit(['destroy', '--yes', 'disk'])).code, 0);
    assert.equal(sha256(join(project, 'system.img')), systemHash, 'the disk image is unchanged');
    assert.deepEqual(
      processesNaming(join(project, '.vmkit')).map((process) => process.program),
      [],
      'no QEMU or hub left',
    );
  });

  it('without an agent: up waits for readyWhen on the console; snapshots and reset work; exec says why not', async () => {
    const up = await vmkit(['up', 'console']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stderr, /saved snapshot clean/);
    assert.match(
      readFileSync(join(project, '.vmkit', 'console', 'boot-console.log'), 'utf8'),
      /tiny image up/,
    );
    const refused = await vmkit(['sync', 'console']);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /without vmkit's agent/);
    const reset = await vmkit(['reset', 'console']);
    assert.equal(reset.code, 0, reset.stderr);
    const [state] = JSON.parse((await vmkit(['status', 'console', '--json'])).stdout) as Array<{
      state: string;
    }>;
    assert.equal(state?.state, 'running');
    assert.equal((await vmkit(['destroy', '--yes', 'console'])).code, 0);
    assert.deepEqual(processesNaming(join(project, '.vmkit')), [], 'no QEMU left');
  });
});

// `vmkit up` of a new project VM through the boot cache (its own store here, so that the first
// up is a miss): the first saves its configuration's boot, the next restores it; each restored VM
// is its own machine (hostname, console history, clock, work disk, provisioning), boots from its
// disks after down, and `up --fresh` boots for real.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { cli, lacks, runProgram } from '../helpers.js';

const top = mkdtempSync('/tmp/vmkit-pbc-');
const store = join(top, 'store');
const folder = (name: string) => join(top, name);
const vmkit = (cwd: string, args: string[]) =>
  runProgram(process.execPath, [cli, ...args], {
    cwd,
    input: '',
    env: { VMKIT_SNAPSHOT_DIR: store },
    timeoutMs: 240_000,
  });
const ok = async (cwd: string, args: string[]) => {
  const result = await vmkit(cwd, args);
  assert.equal(result.code, 0, `vmkit ${args.join(' ')}: ${result.stderr}`);
  return result;
};
const guest = async (cwd: string, script: string) =>
  (await ok(cwd, ['exec', '--', 'sh', '-c', script])).stdout;

/** A project whose one VM is called `name`: the same configuration in each, but for the name. */
function makeProject(name: string): string {
  const dir = folder(name);
  mkdirSync(dir);
  writeFileSync(
    join(dir, 'vmkit.config.json'),
    JSON.stringify({
      vms: {
        [name]: {
          image: 'tiny',
          memoryMiB: 176,
          diskMiB: 48,
          provision: [`echo provisioned-${name} >> /work/provisioned`],
        },
      },
    }),
  );
  return dir;
}

after(async () => {
  for (const process of processesNaming(top)) await stopDetached(process, 0);
  rmSync(top, { recursive: true, force: true });
});

describe('project VMs: up through the boot cache', {
  skip: lacks('detached') || lacks('snapshot') || lacks('cowFork'),
  timeout: 600_000,
}, () => {
  const first = makeProject('first');
  const second = makeProject('second');
  const third = makeProject('third');

  it('the first up saves the boot, the next restores it; each VM is its own', async () => {
    const saved = await ok(first, ['up']);
    assert.match(saved.stderr, /boot cache: no entry boot\.tiny-\w+ yet; booting this configuration once/);
    assert.match(saved.stderr, /VM first is up \([\d.]+ s, from the boot cache\)/);
    const entries = readdirSync(store).filter((name) => name.startsWith('boot.'));
    assert.equal(entries.length, 1, `entries: ${entries.join(' ')}`);

    const restored = await ok(second, ['up']);
    assert.doesNotMatch(restored.stderr, /no entry/);
    assert.match(restored.stderr, new RegExp(`VM second restored from ${entries[0]}`));
    assert.match(restored.stderr, /VM second is up \([\d.]+ s, from the boot cache\)/);

    for (const [dir, name] of [
      [first, 'first'],
      [second, 'second'],
    ] as const) {
      assert.equal(await guest(dir, 'hostname'), `${name}\n`);
      assert.equal(await guest(dir, 'cat /work/provisioned'), `provisioned-${name}\n`);
      assert.match(await guest(dir, 'mount'), /^\/dev\/vda on \/work /m, 'the work disk is mounted');
      // Restricted user-mode networking: the link to the host, and no way out.
      assert.doesNotMatch(await guest(dir, 'ip route'), /default/);
      const off = Number(await guest(dir, 'date +%s')) - Date.now() / 1000;
      assert.ok(Math.abs(off) < 5, `${name}: guest clock ${off} s off the host's`);
      const status = JSON.parse((await ok(dir, ['status', '--json'])).stdout) as Array<{
        state: string;
        snapshots: string[];
      }>;
      assert.equal(status[0]?.state, 'running');
      assert.deepEqual(status[0]?.snapshots, ['clean']);
    }
    // The guests were not one: randomness drawn in each differs.
    assert.notEqual(
      await guest(first, 'head -c 16 /dev/urandom | od -An -tx1'),
      await guest(second, 'head -c 16 /dev/urandom | od -An -tx1'),
    );
    // The console log starts with the boot the state comes from.
    const bootConsole = readFileSync(join(store, entries[0] ?? '', 'boot-console.log'), 'utf8');
    const consoleLog = readFileSync(join(second, '.vmkit', 'second', 'run', 'console.log'), 'utf8');
    assert.ok(bootConsole.length > 0 && consoleLog.startsWith(bootConsole), consoleLog);
  });

  it('a restored VM boots from its own disks after down; destroy and up restore again', async () => {
    await guest(second, 'echo kept > /work/kept; sync');
    await ok(second, ['down']);
    const booted = await ok(second, ['up']);
    assert.doesNotMatch(booted.stderr, /boot cache/);
    assert.equal(await guest(second, 'cat /work/kept'), 'kept\n');
    assert.equal(
      await guest(second, 'cat /work/provisioned'),
      'provisioned-second\n',
      'not provisioned again',
    );
    await ok(second, ['destroy', '--yes']);
    const again = await ok(second, ['up']);
    assert.match(again.stderr, /from the boot cache/);
    assert.equal(await guest(second, 'cat /work/provisioned'), 'provisioned-second\n');
    assert.equal(await guest(second, 'test -e /work/kept || echo gone'), 'gone\n', 'a new data disk');
  });

  it('up --fresh boots for real', async () => {
    const fresh = await ok(third, ['up', '--fresh']);
    assert.doesNotMatch(fresh.stderr, /boot cache/);
    assert.match(fresh.stderr, /VM third is up \([\d.]+ s\)/);
    assert.equal(await guest(third, 'hostname'), 'third\n');
    assert.equal(await guest(third, 'cat /work/provisioned'), 'provisioned-third\n');
    assert.doesNotMatch(await guest(third, 'ip route'), /default/);
  });

  it('down everywhere leaves no process behind', async () => {
    for (const dir of [first, second, third]) await ok(dir, ['down']);
    assert.deepEqual(
      processesNaming(top).map((process) => process.program),
      [],
    );
  });
});

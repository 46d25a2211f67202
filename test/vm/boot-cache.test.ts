// The boot cache: a machine configuration boots once, later starts restore its saved boot, and a
// restored machine has the identity a boot would have given it.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, truncateSync, watch } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { listBootCache, type Machine, restoreMachine, startMachine, VirtualSwitch } from '../../src/index.js';
import { lacks, root, runCli } from '../helpers.js';

// A store of this file's own (each test file runs in its own process).
const store = mkdtempSync(join(tmpdir(), 'vmkit-boot-cache-'));
process.env.VMKIT_SNAPSHOT_DIR = store;

/** Starts a machine and keeps its progress lines. */
async function start(name: string, options: Record<string, unknown> = {}) {
  const lines: string[] = [];
  const machine = await startMachine({ name, ...options, log: (line) => lines.push(line) });
  return { machine, lines, restored: lines.some((line) => line.includes('started from the boot cache')) };
}

/** What makes a guest itself: hostname, eth0's MAC and address, hosts lines, clock, randomness. */
async function identityOf(machine: Machine) {
  const [hostname, mac, address, hosts, clock, random, bootId] = (
    await machine.succeed(
      'hostname; cat /sys/class/net/eth0/address; ip -o -4 addr show eth0 | tr -s " " | cut -d" " -f4; ' +
        'grep -c -e "api$" -e "peer$" /etc/hosts; date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; ' +
        'cat /proc/sys/kernel/random/boot_id',
    )
  ).split('\n');
  return { hostname, mac, address, hosts: Number(hosts), clock: Number(clock), random, bootId };
}

describe('the boot cache', { skip: lacks('snapshot') || lacks('cowFork') }, () => {
  after(async () => {
    await rm(store, { recursive: true, force: true });
  });

  it('boots a configuration once: a second start restores it, fresh: true boots', async () => {
    const first = await start('cache-first');
    await first.machine.close();
    assert.equal(first.restored, false, first.lines.join('\n'));
    assert.ok(
      first.lines.some((line) => /boot cache: saved boot\.tiny-/.test(line)),
      first.lines.join('\n'),
    );
    const entries = await listBootCache();
    assert.equal(entries.length, 1);
    const second = await start('cache-second');
    assert.ok(second.restored, second.lines.join('\n'));
    assert.equal(await second.machine.succeed('hostname'), 'cache-second\n');
    // Its RAM is the entry's, mapped copy-on-write: a snapshot of it carries RAM in its saved state.
    await second.machine.succeed('echo kept > /root/note');
    const snapshot = await second.machine.snapshot();
    await second.machine.close();
    assert.equal(snapshot.manifest.ramInStream, true);
    await using clone = await restoreMachine(snapshot, { name: 'cache-clone' });
    assert.equal(await clone.succeed('cat /root/note; hostname'), 'kept\ncache-clone\n');
    await rm(snapshot.dir, { recursive: true, force: true });
    const fresh = await start('cache-fresh', { fresh: true });
    assert.equal(fresh.restored, false, fresh.lines.join('\n'));
    assert.ok(!fresh.lines.some((line) => line.includes('boot cache')), fresh.lines.join('\n'));
    await fresh.machine.close();
  });

  it('gives restored machines the identity a boot gives them, each its own', async () => {
    const lan = await VirtualSwitch.create('bc-lan', join(store, 'lan.sock'));
    const other = await VirtualSwitch.create('bc-other', join(store, 'other.sock'));
    // A host service for the guests' host NIC (QEMU connects to it when it starts).
    const api = createServer((_request, response) => response.end('api\n')).listen(0, '127.0.0.1');
    await once(api, 'listening');
    const apiPort = (api.address() as AddressInfo).port;
    const machines: Machine[] = [];
    try {
      const options = (address: string, fresh: boolean, sw = lan) => ({
        networks: [{ switch: sw, address }],
        hosts: { peer: '10.0.0.99' },
        hostServices: { api: apiPort },
        fresh,
      });
      // The first start of this configuration boots and saves it; the next two restore it.
      const seeded = await start('seed', options('10.0.0.9/24', false));
      machines.push(seeded.machine);
      const a = await start('twin-a', options('10.0.0.1/24', false));
      const b = await start('twin-b', options('10.0.0.2/24', false));
      machines.push(a.machine, b.machine);
      assert.ok(a.restored && b.restored, [...a.lines, ...b.lines].join('\n'));
      // A namesake booted for real, on a switch of its own (one switch holds one twin-a).
      const booted = await start('twin-a', options('10.0.0.3/24', true, other));
      machines.push(booted.machine);
      assert.equal(booted.restored, false);
      const [ia, ib, iboot, iseed] = await Promise.all(
        [a, b, booted, seeded].map((one) => identityOf(one.machine)),
      );
      assert.deepEqual([ia?.hostname, ib?.hostname, iseed?.hostname], ['twin-a', 'twin-b', 'seed']);
      assert.deepEqual(
        [ia?.address, ib?.address, iseed?.address],
        ['10.0.0.1/24', '10.0.0.2/24', '10.0.0.9/24'],
      );
      // The MAC a boot gives a machine is its name's: restored twin-a has booted twin-a's.
      assert.equal(ia?.mac, iboot?.mac);
      assert.equal(new Set([ia?.mac, ib?.mac, iseed?.mac]).size, 3);
      for (const one of [ia, ib, iseed, iboot]) {
        assert.equal(one?.hosts, 2, 'the hosts line of the service and the one given');
        assert.ok(Math.abs((one?.clock ?? 0) - Date.now() / 1000) < 5, 'the host clock');
      }
      assert.equal(new Set([ia?.random, ib?.random, iseed?.random]).size, 3, 'randomness of their own');
      // The kernel makes the boot ID at its first read: nothing on tiny reads it before the save.
      assert.equal(new Set([ia?.bootId, ib?.bootId, iboot?.bootId]).size, 3);
      // Their new identities work on the switch: they reach each other by address.
      await a.machine.succeed('ping -c 1 -W 5 10.0.0.2');
      await b.machine.succeed('ping -c 1 -W 5 10.0.0.9');
      // And the host service by its name, through this start's own host port.
      assert.equal(await a.machine.succeed(`wget -qO- http://api:${apiPort}/`), 'api\n');
    } finally {
      await Promise.allSettled(machines.map((machine) => machine.close()));
      await lan.close();
      await other.close();
      api.close();
    }
  });

  it('removes a damaged entry and boots for real, with a warning', async () => {
    const options = { memoryMiB: 192 };
    await (await start('damage-seed', options)).machine.close();
    const [entry] = (await listBootCache()).filter((one) => one.memoryMiB === 192);
    assert.ok(entry);
    truncateSync(join(entry.dir, 'state'), 1000);
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.message);
    process.on('warning', onWarning);
    try {
      const after = await start('damage-after', options);
      await after.machine.close();
      assert.equal(after.restored, false);
      assert.ok(
        after.lines.some((line) => line.includes(`entry ${entry.id} removed`)),
        after.lines.join('\n'),
      );
      assert.ok(
        warnings.some((line) => line.includes('has 1000 bytes')),
        warnings.join('\n'),
      );
      // Booted for real, and saved again whole.
      const again = await start('damage-again', options);
      await again.machine.close();
      assert.ok(again.restored, again.lines.join('\n'));
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('stores one entry for two first starts of one configuration at once', async () => {
    const options = { memoryMiB: 208 };
    const both = await Promise.all([start('together-1', options), start('together-2', options)]);
    await Promise.all(both.map((one) => one.machine.close()));
    const lines = both.flatMap((one) => one.lines);
    assert.equal(lines.filter((line) => line.includes('boot cache: saved')).length, 1, lines.join('\n'));
    assert.equal(both.filter((one) => one.restored).length, 1, lines.join('\n'));
  });

  it('never uses an entry half-written by a process killed while it saved', async () => {
    const runRoot = mkdtempSync(join(tmpdir(), 'vmkit-bc-kill-'));
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/boot-cache-start.ts', '224'], {
      cwd: root,
      env: { ...process.env, VMKIT_RUN_DIR: runRoot },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    let leftAtKill: string[] = [];
    const killed = new Promise<void>((resolve) => child.on('close', () => resolve()));
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk;
    });
    // Killed the moment its save has begun: the entry's scratch folder appears in the store.
    const watcher = watch(store, (_event, name) => {
      if (!name?.startsWith(`.taking-${child.pid}-`)) return;
      leftAtKill = readdirSync(store).filter((entry) => entry.startsWith('.taking-'));
      child.kill('SIGKILL');
    });
    await killed;
    watcher.close();
    assert.ok(output.includes('booted:') && !output.includes('started\n'), output);
    assert.ok(leftAtKill.length > 0, 'the kill left a half-written entry');
    try {
      // The next vmkit reaps what the killed one left: its VMM and its half-taken entry.
      await runCli(['doctor'], { VMKIT_RUN_DIR: runRoot }, 60_000);
      const vmms = spawnSync('pgrep', ['-f', runRoot], { encoding: 'utf8' }).stdout.trim();
      assert.equal(vmms, '', 'no VMM of the killed process is left');
      const after = await start('after-kill', { memoryMiB: 224 });
      await after.machine.close();
      assert.equal(after.restored, false, after.lines.join('\n'));
      assert.deepEqual(
        readdirSync(store).filter((name) => name.startsWith(`.taking-${child.pid}-`)),
        [],
        'no half-taken entry is left',
      );
      const again = await start('after-kill-2', { memoryMiB: 224 });
      await again.machine.close();
      assert.ok(again.restored);
    } finally {
      await rm(runRoot, { recursive: true, force: true });
    }
  });

  it('still boots on a full disk, and says it could not save', {
    skip: process.getuid?.() !== 0 && 'mounts a tmpfs: root only',
  }, async () => {
    const full = join(store, 'full');
    mkdirSync(full);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', full]);
    assert.equal(mounted.status, 0, String(mounted.stderr));
    process.env.VMKIT_SNAPSHOT_DIR = full;
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.message);
    process.on('warning', onWarning);
    try {
      const started = await start('full-disk', { memoryMiB: 240 });
      assert.equal(await started.machine.succeed('hostname'), 'full-disk\n');
      await started.machine.close();
      assert.ok(
        warnings.some((line) => line.includes('could not save')),
        warnings.join('\n'),
      );
      assert.deepEqual(readdirSync(full), [], 'nothing half-written is left on the full disk');
    } finally {
      process.off('warning', onWarning);
      process.env.VMKIT_SNAPSHOT_DIR = store;
      spawnSync('umount', [full]);
    }
  });
});

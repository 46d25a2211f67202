// The boot cache's key, refusals and size cap, without a VMM.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ResolvedMachine } from '../../src/machine/start.js';
import {
  bootCacheId,
  bootCacheRefusal,
  listBootCache,
  pruneBootCache,
} from '../../src/snapshot/boot-cache.js';
import { SNAPSHOT_FORMAT } from '../../src/snapshot/manifest.js';
import { runCli } from '../helpers.js';

const store = mkdtempSync(join(tmpdir(), 'vmkit-boot-cache-unit-'));
process.env.VMKIT_SNAPSHOT_DIR = store;

/** A resolved machine as resolveMachine() settles it, with a backend that only answers its version. */
function resolved(overrides: Record<string, unknown> = {}, config: Record<string, unknown> = {}) {
  return {
    name: 'box',
    backend: {
      name: 'qemu',
      title: 'QEMU',
      capabilities: { snapshot: true, cowFork: true },
      version: async () => 'QEMU emulator version 7.2.0',
    },
    runtime: {},
    profile: { name: 'tiny' },
    accel: { accel: 'tcg', reason: 'test' },
    timeoutMs: 1000,
    commandTimeoutMs: 1000,
    ...overrides,
    config: {
      backend: 'qemu',
      image: { name: 'tiny', key: 'k1', cmdline: 'console=ttyS0' },
      memoryMiB: 256,
      cpus: 1,
      accel: 'tcg',
      nics: 1,
      macs: ['52:54:00:00:00:01'],
      disks: [],
      qemuArgs: [],
      hostNic: {
        mac: '52:54:00:00:00:02',
        internet: false,
        services: [{ guestAddress: '10.0.2.100', port: 8080, hostPort: 8080 }],
      },
      ...config,
    },
  } as unknown as ResolvedMachine;
}

/** A fake entry: a manifest and a RAM file of `mib` MiB of data, last used `ageS` seconds ago. */
function entry(id: string, mib: number, ageS: number): void {
  const dir = join(store, id);
  mkdirSync(dir);
  writeFileSync(
    join(dir, 'manifest.json'),
    JSON.stringify({
      format: SNAPSHOT_FORMAT,
      id,
      name: id.slice(0, id.lastIndexOf('-')),
      createdAt: new Date(Date.now() - ageS * 1000).toISOString(),
      image: { name: 'tiny' },
      identity: { memoryMiB: 256 },
      files: {},
    }),
  );
  writeFileSync(join(dir, 'ram'), Buffer.alloc(mib * 2 ** 20, 1));
  writeFileSync(join(dir, 'used'), '');
  const when = new Date(Date.now() - ageS * 1000);
  utimesSync(join(dir, 'used'), when, when);
}

describe('the boot cache', () => {
  after(() => rm(store, { recursive: true, force: true }));

  it("keys a configuration by what shapes its guest, not by a start's identity", async () => {
    const base = await bootCacheId(resolved());
    assert.match(base, /^boot\.tiny-[0-9a-f]{16}$/);
    // A start's own identity: name, MACs, host ports.
    const other = resolved(
      { name: 'other' },
      {
        macs: ['52:54:00:00:00:09'],
        hostNic: {
          mac: '52:54:00:00:00:0a',
          internet: false,
          services: [{ guestAddress: '10.0.2.100', port: 9, hostPort: 9 }],
        },
      },
    );
    assert.equal(await bootCacheId(other), base);
    // What shapes the guest.
    for (const change of [
      { memoryMiB: 512 },
      { cpus: 2 },
      { nics: 2 },
      { disks: [{ sizeMiB: 8 }] },
      { qemuArgs: ['-no-hpet'] },
      { accel: 'kvm' },
      { image: { name: 'tiny', key: 'k2', cmdline: 'console=ttyS0' } },
      { image: { name: 'tiny', key: 'k1', cmdline: 'console=ttyS0 quiet' } },
      { hostNic: { mac: 'x', internet: true, services: [] } },
    ]) {
      assert.notEqual(await bootCacheId(resolved({}, change)), base, JSON.stringify(change));
    }
    const newer = resolved({
      backend: { ...resolved().backend, version: async () => 'QEMU emulator version 8.0.0' },
    });
    assert.notEqual(await bootCacheId(newer), base, 'another QEMU');
  });

  it('boots for real what it cannot cache, and says why', () => {
    const refusal = (options: Record<string, unknown>, config: Record<string, unknown> = {}) =>
      bootCacheRefusal({ name: 'box', ...options }, resolved({}, config));
    assert.equal(refusal({}), undefined);
    assert.match(refusal({ fresh: true }) ?? '', /fresh: true/);
    assert.match(refusal({}, { media: { kind: 'iso' } }) ?? '', /media you bring/);
    assert.match(refusal({}, { backdoor: false }) ?? '', /without the backdoor/);
    assert.match(refusal({}, { extraDisks: [{ path: '/x' }] }) ?? '', /extra disks/);
    assert.match(refusal({}, { display: true }) ?? '', /a screen/);
    process.env.VMKIT_BOOT_CACHE = 'off';
    try {
      assert.match(refusal({}) ?? '', /VMKIT_BOOT_CACHE=off/);
    } finally {
      delete process.env.VMKIT_BOOT_CACHE;
    }
  });

  it('removes the least recently used entries beyond its size cap, never the one just saved', async () => {
    entry('boot.tiny-0000000000000001', 2, 300);
    entry('boot.tiny-0000000000000002', 2, 200);
    entry('boot.tiny-0000000000000003', 2, 100);
    entry('boot.tiny-0000000000000004', 2, 400);
    assert.deepEqual(
      (await listBootCache()).map((one) => one.id.slice(-1)),
      ['3', '2', '1', '4'],
      'most recently used first',
    );
    const removed = await pruneBootCache({ maxBytes: 5 * 2 ** 20, keep: 'boot.tiny-0000000000000004' });
    assert.deepEqual(
      removed.map((one) => one.id.slice(-1)),
      ['1', '2'],
    );
    assert.match(removed[0]?.reason ?? '', /least recently used; the cache holds at most 5 MiB/);
    assert.deepEqual((await listBootCache()).map((one) => one.id.slice(-1)).sort(), ['3', '4']);
    const cleared = await pruneBootCache({ all: true, maxBytes: 0 });
    assert.equal(cleared.length, 2);
    assert.deepEqual(await listBootCache(), []);
  });

  it('vmkit cache ls, prune and clear', async () => {
    const env = { VMKIT_SNAPSHOT_DIR: store };
    entry('boot.tiny-0000000000000005', 1, 50);
    entry('boot.tiny-0000000000000006', 1, 10);
    const listed = await runCli(['cache', 'ls', '--json'], env, 60_000);
    assert.equal(listed.code, 0, listed.stderr);
    const parsed = JSON.parse(listed.stdout) as { entries: Array<{ id: string }>; totalBytes: number };
    assert.deepEqual(
      parsed.entries.map((one) => one.id.slice(-1)),
      ['6', '5'],
    );
    assert.ok(parsed.totalBytes >= 2 * 2 ** 20);
    const bad = await runCli(['cache', 'prune', '--max-mib', 'lots'], env, 60_000);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--max-mib takes a whole number of MiB, not "lots"/);
    // Both entries fail this host's checks (no image, no backend version of theirs): pruned.
    const pruned = await runCli(['cache', 'prune', '--max-mib', '1'], env, 60_000);
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.equal(pruned.stdout.match(/^removed boot\.tiny-/gm)?.length, 2, pruned.stdout);
    entry('boot.tiny-0000000000000007', 1, 5);
    const cleared = await runCli(['cache', 'clear'], env, 60_000);
    assert.match(cleared.stdout, /^removed boot\.tiny-0000000000000007 \(1\.0 MiB\): all were asked for$/m);
    assert.match((await runCli(['cache', 'ls'], env, 60_000)).stdout, /^the boot cache is empty/);
  });
});

// RAM deltas against a pool base (written, read back, rebuilt byte for byte) and which bases a
// pool keeps.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { poolBasesDir, pruneBases } from '../../src/fleet/snapshots/base.js';
import { buildRam, deltaInfo, PAGE, reserveRam, writeDelta } from '../../src/fleet/snapshots/delta.js';
import type { Instance, Pool } from '../../src/fleet/state/model.js';
import { fillRamCharged } from '../../src/fleet/vmm/ram-fill.js';

const dir = mkdtempSync('/tmp/vmkit-delta-');
after(() => rmSync(dir, { recursive: true, force: true }));

const PAGES = 600; // more than one 1 MiB chunk
const page = (fill: number) => Buffer.alloc(PAGE, fill);

describe('RAM deltas', () => {
  const base = Buffer.concat(Array.from({ length: PAGES }, (_, i) => page(i % 3 === 0 ? 0 : (i % 250) + 1)));
  const ram = Buffer.from(base);
  // Changed pages: a non-zero one, a zero page made non-zero, a non-zero one made zero, a run.
  page(0xaa).copy(ram, 1 * PAGE);
  page(0xbb).copy(ram, 3 * PAGE);
  page(0).copy(ram, 4 * PAGE);
  for (const i of [300, 301, 302, 599]) page(0xcc).copy(ram, i * PAGE);
  const basePath = join(dir, 'base.ram');
  const ramPath = join(dir, 'live.ram');
  writeFileSync(basePath, base);
  writeFileSync(ramPath, ram);

  it('stores only the pages that differ, zeros included, and rebuilds the RAM exactly', async () => {
    const delta = await writeDelta(ramPath, basePath, join(dir, 'ram.delta'));
    assert.equal(delta.pages, 7);
    assert.equal(delta.ramBytes, PAGES * PAGE);
    assert.deepEqual(deltaInfo(join(dir, 'ram.delta')), delta);
    assert.equal(statSync(join(dir, 'ram.delta')).size, delta.bytes);
    await buildRam(basePath, join(dir, 'rebuilt.ram'), join(dir, 'ram.delta'));
    assert.ok(readFileSync(join(dir, 'rebuilt.ram')).equals(ram), 'the rebuilt RAM differs');
    await buildRam(basePath, join(dir, 'plain.ram'));
    assert.ok(readFileSync(join(dir, 'plain.ram')).equals(base));
  });

  it('with a memory group, fills the RAM in a child that joined the group first', async () => {
    // A fake group: the child's pid lands in its cgroup.procs as a plain file.
    const group = join(dir, 'group');
    mkdirSync(group);
    writeFileSync(join(group, 'memory.max'), '1');
    await writeDelta(ramPath, basePath, join(dir, 'child.delta'));
    reserveRam(basePath, join(dir, 'child.ram'));
    await fillRamCharged([group], basePath, join(dir, 'child.ram'), join(dir, 'child.delta'));
    assert.ok(readFileSync(join(dir, 'child.ram')).equals(ram), 'the RAM the child filled differs');
    const joined = Number(readFileSync(join(group, 'cgroup.procs'), 'utf8'));
    assert.ok(joined > 0 && joined !== process.pid, `joined by ${joined}`);
  });

  it('an identical RAM file has an empty delta', async () => {
    const delta = await writeDelta(basePath, basePath, join(dir, 'same.delta'));
    assert.equal(delta.pages, 0);
  });

  it('refuses RAM of another size, and a damaged delta', async () => {
    writeFileSync(join(dir, 'small.ram'), page(1));
    await assert.rejects(writeDelta(join(dir, 'small.ram'), basePath, join(dir, 'x.delta')), /page by page/);
    assert.deepEqual(
      readdirSync(dir).filter((name) => name.startsWith('x.delta')),
      [],
      'a partial delta was left',
    );
    const damaged = readFileSync(join(dir, 'ram.delta')).subarray(0, -1);
    writeFileSync(join(dir, 'damaged.delta'), damaged);
    await assert.rejects(buildRam(basePath, join(dir, 'bad.ram'), join(dir, 'damaged.delta')), /delta/);
  });
});

describe('base snapshots kept per pool', () => {
  const pool = { tenant: 't', id: 'p', revision: 'c'.repeat(64) } as Pool;
  const instance = (state: string, revision: string) =>
    ({ pool: 'p', state, revision: revision.repeat(64) }) as unknown as Instance;
  const root = poolBasesDir(dir, 't', 'p');

  it('keeps the current revision and those instances run or sleep on, removes the rest', () => {
    for (const r of ['a', 'b', 'c', 'd']) mkdirSync(join(root, r.repeat(16)), { recursive: true });
    const removed = pruneBases(dir, pool, [
      instance('Sleeping', 'a'),
      instance('Stopped', 'b'),
      instance('Running', 'd'),
    ]);
    assert.deepEqual(removed, ['b'.repeat(16)]);
    assert.deepEqual(
      readdirSync(root).sort(),
      ['a', 'c', 'd'].map((r) => r.repeat(16)),
    );
  });

  it('a rebuild invalidates the current base unless an instance needs it', () => {
    const removed = pruneBases(dir, { ...pool, revision: '' }, [instance('Sleeping', 'a')]);
    assert.deepEqual(removed.sort(), ['c'.repeat(16), 'd'.repeat(16)]);
    assert.deepEqual(readdirSync(root), ['a'.repeat(16)]);
  });
});

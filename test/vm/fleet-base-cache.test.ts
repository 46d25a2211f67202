// Pool bases through the boot cache (its own store here): the first base of a shape boots and is
// saved as an entry; a base of another pool of the tenant's of the same shape is a copy of it, and
// its instances are their own machines on their tenant's network; another tenant, a damaged entry
// and VMKIT_BOOT_CACHE=off boot.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Fleet } from '../../src/fleet/fleet.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { listBootCache } from '../../src/snapshot/boot-cache.js';
import { lacks } from '../helpers.js';

// Short: instance sockets live in the fleet folder and unix socket paths stop at 107 bytes.
const dir = mkdtempSync('/tmp/vmkit-fbc-');
const store = mkdtempSync('/tmp/vmkit-fbc-store-');
process.env.VMKIT_SNAPSHOT_DIR = store;
const sh = (script: string) => ['sh', '-c', script];

/** How the base of `tenant/pool` was made, from its record's steps. */
function baseSteps(tenant: string, pool: string): string {
  const root = join(dir, 'base', tenant, pool);
  const [revision] = readdirSync(root);
  return (JSON.parse(readFileSync(join(root, revision ?? '', 'base.json'), 'utf8')) as { steps: string })
    .steps;
}

describe('fleet: pool bases through the boot cache', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 600_000,
}, () => {
  let fleet: Fleet;
  /** The entry the first test saved: tenant one's shape. */
  let firstEntry = '';
  const warnings: string[] = [];
  const onWarning = (warning: Error) => warnings.push(warning.message);

  before(() => {
    process.on('warning', onWarning);
    fleet = new Fleet({ dir });
    fleet.createTenant({ id: 'one', subnet: '10.81.0.0/24' });
    fleet.createTenant({ id: 'two', subnet: '10.82.0.0/24' });
  });

  after(async () => {
    process.off('warning', onWarning);
    for (const tenant of fleet.store.listTenants()) await fleet.destroyTenant(tenant.id).catch(() => {});
    await fleet.close();
    for (const leftover of processesNaming(dir)) await stopDetached(leftover, 0);
    rmSync(dir, { recursive: true, force: true });
    rmSync(store, { recursive: true, force: true });
    delete process.env.VMKIT_SNAPSHOT_DIR;
  });

  it('the first base of a shape boots and is saved; a base of another pool of that shape is a copy', async () => {
    await fleet.createPool({ tenant: 'one', id: 'p', memoryMiB: 128 });
    await fleet.createPool({ tenant: 'one', id: 'q', memoryMiB: 128 });
    await fleet.createInstance('one/p', 'p1');
    await fleet.createInstance('one/q', 'q1');
    assert.equal((await fleet.start('one/p/p1')).state, 'Running');
    assert.match(baseSteps('one', 'p'), /booted \d+ ms/);
    const entries = (await listBootCache()).map((entry) => entry.id);
    assert.equal(entries.length, 1, entries.join(' '));
    assert.match(entries[0] ?? '', /^boot\.fleet-tiny-[0-9a-f]{16}$/);
    firstEntry = entries[0] ?? '';

    assert.equal((await fleet.start('one/q/q1')).state, 'Running');
    assert.match(baseSteps('one', 'q'), new RegExp(`^copied from boot cache entry ${entries[0]} \\d+ ms$`));
    // Each instance is its own machine, and the two reach each other on their tenant's switch.
    assert.equal((await fleet.exec('one/p/p1', ['hostname'])).stdout.toString(), 'p1\n');
    assert.equal((await fleet.exec('one/q/q1', ['hostname'])).stdout.toString(), 'q1\n');
    const q1 = fleet.store.listInstances().find((instance) => instance.id === 'q1');
    const ping = await fleet.exec('one/p/p1', sh(`ping -c 1 -W 3 ${q1?.address.split('/')[0]}`));
    assert.equal(ping.status, 0, ping.stdout.toString() + ping.stderr.toString());
    // Sleep and wake work on a base that was copied.
    await fleet.sleep('one/q/q1');
    await fleet.wake('one/q/q1');
    assert.equal((await fleet.exec('one/q/q1', ['hostname'])).stdout.toString(), 'q1\n');
  });

  it("another tenant's pool of the same shape boots its own base: bases are never shared across tenants", async () => {
    await fleet.createPool({ tenant: 'two', id: 'r', memoryMiB: 128 });
    await fleet.createInstance('two/r', 'r1');
    assert.equal((await fleet.start('two/r/r1')).state, 'Running');
    assert.match(baseSteps('two', 'r'), /booted \d+ ms/);
    assert.equal((await listBootCache()).length, 2);
  });

  it('a damaged entry is removed with a warning and the base boots; VMKIT_BOOT_CACHE=off boots', async () => {
    const shapeOfOne = (await listBootCache()).find((listed) => listed.id === firstEntry);
    assert.ok(shapeOfOne, `entry ${firstEntry} is gone`);
    truncateSync(join(shapeOfOne.dir, 'ram'), 4096);
    await fleet.createPool({ tenant: 'one', id: 's', memoryMiB: 128 });
    await fleet.createInstance('one/s', 's1');
    assert.equal((await fleet.start('one/s/s1')).state, 'Running');
    assert.match(baseSteps('one', 's'), /booted \d+ ms/);
    assert.ok(
      warnings.some((line) => line.includes(`entry ${firstEntry} removed`) && line.includes('damaged')),
      warnings.join('\n'),
    );
    // Saved again by that boot.
    assert.ok((await listBootCache()).some((listed) => listed.id === firstEntry));
    process.env.VMKIT_BOOT_CACHE = 'off';
    try {
      await fleet.createPool({ tenant: 'one', id: 't', memoryMiB: 128 });
      await fleet.createInstance('one/t', 't1');
      assert.equal((await fleet.start('one/t/t1')).state, 'Running');
      assert.match(baseSteps('one', 't'), /booted \d+ ms/);
    } finally {
      delete process.env.VMKIT_BOOT_CACHE;
    }
  });
});

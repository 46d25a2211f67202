// The key of a fleet pool's base in the boot cache: its tenant and its shape, not the pool's name.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type BaseShape, baseCacheId } from '../../src/fleet/snapshots/base-cache.js';
import type { Pool } from '../../src/fleet/state/model.js';
import type { BootImage } from '../../src/images/types.js';
import type { Runtime } from '../../src/runtime/runtime.js';

const pool = (overrides: Partial<Pool> = {}) =>
  ({
    tenant: 'alpha',
    id: 'web',
    image: 'tiny',
    memoryMiB: 128,
    vcpus: 1,
    dataDiskMiB: 64,
    revision: 'k1',
    ...overrides,
  }) as Pool;

const shape = (overrides: Partial<BaseShape> = {}): BaseShape => ({
  pool: pool(),
  image: { name: 'tiny', key: 'k1', cmdline: 'console=ttyS0', profile: 'tiny' } as BootImage,
  setup: 'hostname base',
  outbound: false,
  accel: 'tcg',
  vmmVersion: 'QEMU emulator version 7.2.0',
  runtime: {} as Runtime,
  ...overrides,
});

describe('fleet base cache', () => {
  it("keys a base by its tenant and shape: another pool of the tenant's of that shape shares it", async () => {
    const id = await baseCacheId(shape());
    assert.match(id ?? '', /^boot\.fleet-tiny-[0-9a-f]{16}$/);
    assert.equal(await baseCacheId(shape({ pool: pool({ id: 'db' }) })), id);
    const changed: Array<[string, Partial<BaseShape>]> = [
      ['tenant', { pool: pool({ tenant: 'beta' }) }],
      ['memory', { pool: pool({ memoryMiB: 256 }) }],
      ['vCPUs', { pool: pool({ vcpus: 2 }) }],
      ['data disk', { pool: pool({ dataDiskMiB: 128 }) }],
      ['outbound NIC', { outbound: true }],
      ['set-up', { setup: 'hostname other' }],
      ['accelerator', { accel: 'kvm' }],
      ['VMM version', { vmmVersion: 'QEMU emulator version 8.0.0' }],
      [
        'image',
        { image: { name: 'tiny', key: 'k2', cmdline: 'console=ttyS0', profile: 'tiny' } as BootImage },
      ],
      [
        'command line',
        { image: { name: 'tiny', key: 'k1', cmdline: 'console=ttyS0 quiet', profile: 'tiny' } as BootImage },
      ],
    ];
    for (const [what, overrides] of changed) {
      assert.notEqual(await baseCacheId(shape(overrides)), id, `${what} changed, the key did not`);
    }
  });

  it('is off with VMKIT_BOOT_CACHE=off', async () => {
    process.env.VMKIT_BOOT_CACHE = 'off';
    try {
      assert.equal(await baseCacheId(shape()), undefined);
    } finally {
      delete process.env.VMKIT_BOOT_CACHE;
    }
  });
});

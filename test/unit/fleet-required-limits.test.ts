// A pool's requireLimits: stored with the pool, read from a desired document, and the refusal
// a start or wake gets when some limit of its VMM could not be applied (the VM test,
// test/vm/fleet-limits.test.ts, refuses a real instance where cgroups are not delegated).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseDesired } from '../../src/fleet/desired/schema.js';
import { LimitsRefusedError, refuseWithoutLimits } from '../../src/fleet/policy/required-limits.js';
import { RefusedError } from '../../src/fleet/state/lifecycle.js';
import { FleetStore } from '../../src/fleet/state/store.js';

describe('pools that require their limits', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-required-limits-'));
  const store = new FleetStore(dir);
  after(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('is off unless asked for, and kept with the pool', () => {
    store.createTenant({ id: 'acme', subnet: '10.50.0.0/24' });
    const loose = store.createPool({ tenant: 'acme', id: 'loose' }, { revision: 'rev1' });
    const strict = store.createPool(
      { tenant: 'acme', id: 'strict', requireLimits: true },
      { revision: 'rev1' },
    );
    assert.equal(loose.requireLimits, false);
    assert.equal(strict.requireLimits, true);
    assert.equal(store.pool('acme', 'strict').requireLimits, true);
  });

  test('a missing limit refuses an instance of such a pool only, naming each limit and why', () => {
    const missing = [
      'memory limit not applied: /sys/fs/cgroup/memory/x: EACCES',
      'pids limit not applied: no pids',
    ];
    assert.doesNotThrow(() => refuseWithoutLimits(store.pool('acme', 'loose'), missing));
    assert.doesNotThrow(() => refuseWithoutLimits(store.pool('acme', 'strict'), []));
    assert.throws(
      () => refuseWithoutLimits(store.pool('acme', 'strict'), missing),
      (error: unknown) =>
        error instanceof LimitsRefusedError &&
        error instanceof RefusedError && // the CLI's exit 1, as a quota refusal
        error.pool === 'acme/strict' &&
        error.message.includes('pool acme/strict requires its resource limits') &&
        missing.every((line) => error.message.includes(line)),
    );
  });

  test('a desired document says it per pool, off by default', () => {
    const doc = parseDesired(
      JSON.stringify({
        version: 1,
        tenants: [{ id: 'acme', subnet: '10.50.0.0/24' }],
        pools: [
          { tenant: 'acme', id: 'a', requireLimits: true },
          { tenant: 'acme', id: 'b' },
        ],
      }),
    );
    assert.deepEqual(
      doc.pools.map((p) => p.requireLimits),
      [true, false],
    );
    assert.throws(
      () => parseDesired('{"version":1,"pools":[{"tenant":"acme","id":"a","requireLimits":"yes"}]}'),
      /requireLimits/,
    );
  });
});

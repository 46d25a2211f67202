import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { defaultFleetDir, SCHEMA_VERSION } from '../../src/fleet/state/db.js';
import { parseAddress } from '../../src/fleet/state/ids.js';
import {
  canTransition,
  checkOperation,
  checkTransition,
  OPERATIONS,
  type Operation,
  RefusedError,
  STATES,
} from '../../src/fleet/state/lifecycle.js';
import { FleetStore } from '../../src/fleet/state/store.js';
import { fleetIdBlock, hashedTenantUid } from '../../src/fleet/vmm/jail.js';

// The table as the issue states it, written out independently of lifecycle.ts.
const ALLOWED = new Set([
  'Created>Ready',
  'Created>Destroyed',
  'Ready>Running',
  'Ready>Sleeping',
  'Ready>Destroyed',
  'Running>Warm',
  'Running>Sleeping',
  'Running>Stopped',
  'Running>Destroyed',
  'Warm>Running',
  'Warm>Sleeping',
  'Warm>Stopped',
  'Warm>Destroyed',
  'Sleeping>Running',
  'Sleeping>Stopped',
  'Sleeping>Destroyed',
  'Stopped>Running',
  'Stopped>Destroyed',
]);

describe('the lifecycle transition table', () => {
  for (const from of STATES) {
    for (const to of STATES) {
      const allowed = ALLOWED.has(`${from}>${to}`);
      test(`${from} -> ${to} is ${allowed ? 'allowed' : 'refused'}`, () => {
        assert.equal(canTransition(from, to), allowed);
        if (allowed) checkTransition(from, to, 'x');
        else assert.throws(() => checkTransition(from, to, 'x'), RefusedError);
      });
    }
  }

  const SOURCES: Record<Operation, string[]> = {
    prepare: ['Created'],
    start: ['Ready', 'Stopped'],
    stop: ['Running', 'Warm', 'Sleeping'],
    warm: ['Running'],
    resume: ['Warm'],
    sleep: ['Running', 'Warm'],
    wake: ['Sleeping'],
    arrive: ['Ready'],
    destroy: ['Created', 'Ready', 'Running', 'Warm', 'Sleeping', 'Stopped'],
  };
  for (const operation of Object.keys(OPERATIONS) as Operation[]) {
    for (const from of STATES) {
      const allowed = SOURCES[operation].includes(from);
      test(`${operation} from ${from} is ${allowed ? 'allowed' : 'refused'}`, () => {
        if (allowed) assert.equal(checkOperation(operation, from, 'x'), OPERATIONS[operation]);
        else
          assert.throws(
            () => checkOperation(operation, from, 'i'),
            new RegExp(`cannot ${operation} an instance that is ${from}`),
          );
      });
    }
  }
});

describe('fleet addresses and ids', () => {
  test('paths parse with the parts asked for', () => {
    assert.deepEqual(parseAddress('acme/web/a1', 3), { tenant: 'acme', pool: 'web', instance: 'a1' });
    assert.equal(parseAddress('acme/web', 2).pool, 'web');
  });
  for (const bad of ['Acme', 'a_b', '-a', 'a-', 'a'.repeat(25), '', 'a/b/c/d']) {
    test(`${JSON.stringify(bad)} is refused`, () => {
      assert.throws(() => parseAddress(bad, bad.includes('/') ? 3 : 1), ConfigError);
    });
  }
});

describe('the default fleet folder', () => {
  test('is $VMKIT_FLEET_DIR, else $XDG_DATA_HOME/vmkit/fleet, else ~/.local/share/vmkit/fleet', () => {
    const saved = { fleet: process.env.VMKIT_FLEET_DIR, data: process.env.XDG_DATA_HOME };
    try {
      process.env.VMKIT_FLEET_DIR = '/srv/fleet';
      process.env.XDG_DATA_HOME = '/srv/data';
      assert.equal(defaultFleetDir(), '/srv/fleet');
      delete process.env.VMKIT_FLEET_DIR;
      assert.equal(defaultFleetDir(), '/srv/data/vmkit/fleet');
      delete process.env.XDG_DATA_HOME;
      assert.equal(defaultFleetDir(), join(homedir(), '.local', 'share', 'vmkit', 'fleet'));
    } finally {
      for (const [name, value] of [
        ['VMKIT_FLEET_DIR', saved.fleet],
        ['XDG_DATA_HOME', saved.data],
      ] as const)
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
    }
  });
});

describe('the fleet store', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-fleet-unit-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const store = new FleetStore(dir);
  after(() => store.close());

  test('the database is in WAL mode and at the latest schema; reopening migrates nothing twice', () => {
    assert.equal(store.db.pragma('journal_mode', { simple: true }), 'wal');
    const again = new FleetStore(dir);
    assert.equal(again.db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
    assert.ok(SCHEMA_VERSION >= 2);
    again.close();
  });

  test("tenant uids: the lowest free of the fleet's block, unique, and kept by the migration that records them", () => {
    const uidsDir = mkdtempSync(join(tmpdir(), 'vmkit-fleet-uids-'));
    try {
      const uids = new FleetStore(uidsDir);
      const first = fleetIdBlock(uidsDir);
      const made = ['u1', 'u2', 'u3'].map(
        (id, i) => uids.createTenant({ id, subnet: `10.40.${i}.0/24` }).uid,
      );
      assert.deepEqual(made, [first, first + 1, first + 2]);
      uids.deleteTenant('u2');
      assert.equal(uids.createTenant({ id: 'u4', subnet: '10.40.9.0/24' }).uid, first + 1);
      assert.throws(() => uids.db.prepare("UPDATE tenants SET uid = ? WHERE id = 'u4'").run(first), /UNIQUE/);
      // A fleet from before: no uid column (nor the pools' require_limits, which came after it),
      // schema version two less. Its tenants keep the hash's uid.
      uids.db.exec(
        'DROP INDEX tenants_uid; ALTER TABLE tenants DROP COLUMN uid; ALTER TABLE pools DROP COLUMN require_limits;',
      );
      uids.db.pragma(`user_version = ${SCHEMA_VERSION - 2}`);
      uids.close();
      const migrated = new FleetStore(uidsDir);
      for (const id of ['u1', 'u3', 'u4'])
        assert.equal(migrated.tenant(id).uid, hashedTenantUid(uidsDir, id), `tenant ${id} changed uid`);
      assert.equal(migrated.createTenant({ id: 'u5', subnet: '10.40.10.0/24' }).uid, first);
      migrated.close();
    } finally {
      rmSync(uidsDir, { recursive: true, force: true });
    }
  });

  test('tenants get a normalised subnet and refuse overlapping ones', () => {
    const tenant = store.createTenant({ id: 'acme', subnet: '10.30.0.7/24', maxRunning: 1, maxVcpus: 2 });
    assert.equal(tenant.subnet, '10.30.0.0/24');
    assert.equal(tenant.gateway, '10.30.0.1');
    assert.throws(
      () => store.createTenant({ id: 'other', subnet: '10.30.0.128/25' }),
      /overlaps tenant acme/,
    );
    assert.throws(() => store.createTenant({ id: 'Bad', subnet: '10.31.0.0/24' }), ConfigError);
  });

  test('instances get distinct addresses and MACs; begin records an intent that blocks a second operation', () => {
    store.createPool({ tenant: 'acme', id: 'web', memoryMiB: 128 }, { revision: 'rev1' });
    const a = store.createInstance('acme', 'web', 'a');
    const b = store.createInstance('acme', 'web', 'b');
    assert.equal(a.address, '10.30.0.2/24');
    assert.equal(b.address, '10.30.0.3/24');
    assert.notEqual(a.mac, b.mac);
    assert.equal(a.intent?.operation, 'create');
    store.finish(a.seq, 'Ready');
    store.finish(b.seq, 'Ready');
    const { to } = store.begin(a.seq, 'start');
    assert.equal(to, 'Running');
    assert.equal(store.instanceBySeq(a.seq).intent?.pid, process.pid);
    assert.throws(() => store.begin(a.seq, 'stop'), /busy: start by pid/);
    // The operation in flight counts against the quota already: a second start is refused.
    assert.throws(() => store.begin(b.seq, 'start'), /running instances 1 in use \+ 1 > 1/);
    store.finish(a.seq, 'Running', { pid: 4242 });
    assert.throws(() => store.begin(a.seq, 'wake'), /cannot wake an instance that is Running/);
  });

  test('an intent left by a dead process is reported as needing repair', async () => {
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((resolve) => dead.once('exit', resolve));
    const b = store.instance('acme', 'web', 'b');
    store.db
      .prepare(
        "UPDATE instances SET intent = 'start', intent_from = 'Ready', intent_pid = ?, intent_ticks = '1' WHERE seq = ?",
      )
      .run(dead.pid, b.seq);
    assert.throws(() => store.begin(b.seq, 'start'), /interrupted start needs repair/);
  });

  test('pool instance count and disk quotas refuse with the numbers', () => {
    store.createTenant({ id: 'small', subnet: '10.40.0.0/29', maxInstances: 1, maxDiskMiB: 100 });
    store.createPool({ tenant: 'small', id: 'p', dataDiskMiB: 60 }, { revision: 'rev1' });
    store.createInstance('small', 'p', 'one');
    assert.throws(() => store.createInstance('small', 'p', 'two'), /instances per pool 1 \+ 1 > 1/);
    store.createPool({ tenant: 'small', id: 'q', dataDiskMiB: 60 }, { revision: 'rev1' });
    assert.throws(() => store.createInstance('small', 'q'), /disk MiB 60 in use \+ 60 > 100/);
  });

  test('a pool with instances cannot be deleted, nor a tenant with pools', () => {
    assert.throws(() => store.deletePool('small', 'p'), /still has 1 instance/);
    assert.throws(() => store.deleteTenant('small'), /still has 2 pool/);
  });

  test('concurrent processes creating instances in one fleet all succeed, with distinct addresses', async () => {
    store.createTenant({ id: 'busy', subnet: '10.50.0.0/24', maxInstances: 100 });
    store.createPool({ tenant: 'busy', id: 'p' }, { revision: 'rev1' });
    const storeModule = new URL('../../src/fleet/state/store.ts', import.meta.url).href;
    const script = `
      const { FleetStore } = await import(${JSON.stringify(storeModule)});
      const store = new FleetStore(${JSON.stringify(dir)});
      for (let n = 0; n < 10; n++) {
        const created = store.createInstance('busy', 'p');
        store.finish(created.seq, 'Ready');
      }
      store.close();`;
    const runs = Array.from(
      { length: 4 },
      () =>
        new Promise<number | null>((resolve) => {
          const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
            stdio: ['ignore', 'ignore', 'inherit'],
          });
          child.on('exit', resolve);
        }),
    );
    assert.deepEqual(await Promise.all(runs), [0, 0, 0, 0]);
    const instances = store.listInstances({ tenant: 'busy' });
    assert.equal(instances.length, 40);
    assert.equal(new Set(instances.map((i) => i.address)).size, 40);
    assert.ok(instances.every((i) => i.state === 'Ready' && i.intent === undefined));
  });
});

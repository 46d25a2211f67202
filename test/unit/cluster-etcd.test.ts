// The cluster's store against a real 3-member etcd on loopback (no VMs): two schedulers racing on
// one document never place a slot twice nor book a node past its capacity; a lapsed node's slots
// wait when no other node has room; and the CLI's errors for bad input and an unreachable etcd.
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Lease } from 'etcd3';
import { type ClusterStore, connectCluster, KEYS, type NodeRecord } from '../../src/fleet/cluster/etcd.js';
import { joinMembership } from '../../src/fleet/cluster/membership.js';
import { applyPlacement, planPlacement } from '../../src/fleet/cluster/placement.js';
import { readCluster } from '../../src/fleet/cluster/state.js';
import { applyDocument, clusterStatus } from '../../src/fleet/cluster/status.js';
import { parseDesired } from '../../src/fleet/desired/schema.js';
import { clusterRunDir, type EtcdCluster, startEtcdCluster } from '../etcd.js';
import { runCli } from '../helpers.js';

const dir = await clusterRunDir('vmkit-etcd-');
const CAPACITY_MIB = 640; // five 128 MiB slots per node

const record = (name: string): NodeRecord => ({
  name,
  agentId: `agent-${name}`,
  advertise: `https://127.0.0.1:7443/${name}`,
  capacity: { memoryMiB: CAPACITY_MIB, vcpus: 2 },
  use: { memoryMiB: 0, running: 0, instances: 0 },
  instances: [],
  startedAt: new Date().toISOString(),
  reportedAt: new Date().toISOString(),
});

const doc = (web: number, jobs: number, jobsMiB = 128) =>
  parseDesired(
    JSON.stringify({
      version: 1,
      tenants: [
        {
          id: 'acme',
          subnet: '10.91.0.0/24',
          quotas: { maxRunning: 50, maxMemoryMiB: 65536, maxVcpus: 64, maxInstances: 50 },
        },
        {
          id: 'globex',
          subnet: '10.92.0.0/24',
          quotas: { maxRunning: 50, maxMemoryMiB: 65536, maxVcpus: 64, maxInstances: 50 },
        },
      ],
      pools: [
        { tenant: 'acme', id: 'web', memoryMiB: 128, desired: { running: web } },
        { tenant: 'globex', id: 'jobs', memoryMiB: jobsMiB, desired: { running: jobs } },
      ],
    }),
  );

/** Rounds of one scheduler until a round has nothing left to do (at most 50). */
async function schedule(store: ClusterStore): Promise<number> {
  let conflicts = 0;
  for (let round = 0; round < 50; round++) {
    const state = await readCluster(store);
    const plan = planPlacement(state, 2);
    if (plan.moves.length === 0) return conflicts;
    conflicts += (await applyPlacement(store, state, plan)).conflicts;
  }
  throw new Error('the scheduler did not settle within 50 rounds');
}

describe('the cluster on a real etcd', { timeout: 180_000 }, () => {
  let etcd: EtcdCluster;
  let stores: ClusterStore[];
  const leases = new Map<string, Lease>();

  before(async () => {
    etcd = await startEtcdCluster(join(dir, 'etcd'));
    stores = [0, 1, 2].map(() => connectCluster(etcd.endpoints.split(',')));
    for (const name of ['a', 'b', 'c']) {
      const lease = (stores[0] as ClusterStore).kv.lease(10);
      await lease.put(KEYS.node(name)).value(JSON.stringify(record(name)));
      leases.set(name, lease);
    }
  });

  after(async () => {
    for (const lease of leases.values()) await lease.revoke().catch(() => {});
    for (const store of stores ?? []) store.close();
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('two schedulers racing place every slot once and book no node past its capacity', async () => {
    // 18 slots of 128 MiB against 3 nodes of 640 MiB: 15 fit, 3 wait.
    await applyDocument(stores[0] as ClusterStore, doc(10, 8));
    const [one, two] = await Promise.all([
      schedule(stores[1] as ClusterStore),
      schedule(stores[2] as ClusterStore),
    ]);
    const state = await readCluster(stores[0] as ClusterStore);
    assert.equal(state.slots.size, 15, `placed: ${[...state.slots.keys()].join(', ')}`);
    for (const node of ['a', 'b', 'c']) {
      const here = [...state.slots.values()].filter((s) => s.value.node === node);
      const booked = state.booked.get(node)?.value.memoryMiB ?? 0;
      assert.equal(booked, here.length * 128, `node ${node}: booked ${booked} MiB for ${here.length} slots`);
      assert.ok(booked <= CAPACITY_MIB, `node ${node} overbooked: ${booked} MiB`);
    }
    const status = await clusterStatus(stores[0] as ClusterStore);
    assert.equal(status.pending.length, 3);
    process.stderr.write(`# conflicts met by the two schedulers: ${one} and ${two}\n`);
  });

  test("a lapsed node's slots go where there is room, and wait where there is none", async () => {
    await applyDocument(stores[0] as ClusterStore, doc(5, 4)); // 9 slots: room for all on 2 nodes
    await schedule(stores[1] as ClusterStore);
    await leases.get('c')?.revoke();
    leases.delete('c');
    await schedule(stores[2] as ClusterStore);
    const state = await readCluster(stores[0] as ClusterStore);
    assert.equal(state.slots.size, 9);
    assert.ok([...state.slots.values()].every((s) => s.value.node !== 'c'));
    assert.equal(state.booked.get('c')?.value.memoryMiB ?? 0, 0);
    // 12 slots on two nodes of five: two wait for capacity, on c still, which is gone.
    await applyDocument(stores[0] as ClusterStore, doc(7, 5));
    await schedule(stores[1] as ClusterStore);
    const status = await clusterStatus(stores[0] as ClusterStore);
    assert.equal(status.pending.length, 2, JSON.stringify(status.pending));
    for (const pending of status.pending)
      assert.match(
        pending.reason,
        /^needs 128 MiB: the most free on the 2 alive node\(s\) is 0 MiB, on [ab]$/,
      );
    assert.deepEqual(
      status.nodes.filter((n) => n.alive).map((n) => [n.name, n.slots, n.bookedMiB]),
      [
        ['a', 5, 640],
        ['b', 5, 640],
      ],
    );
  });

  test("a pool's memory changed: its slots are booked again where they are, and the room made is used", async () => {
    // From the last test: 12 slots of 128 MiB, 10 on a and b (640 MiB each), 2 waiting.
    await applyDocument(stores[0] as ClusterStore, doc(7, 5, 64));
    await schedule(stores[2] as ClusterStore);
    const state = await readCluster(stores[0] as ClusterStore);
    for (const node of ['a', 'b']) {
      const here = [...state.slots.values()].filter((s) => s.value.node === node);
      const sum = here.reduce((total, s) => total + s.value.memoryMiB, 0);
      assert.equal(state.booked.get(node)?.value.memoryMiB, sum, `node ${node}`);
      assert.ok(sum <= CAPACITY_MIB, `node ${node} overbooked: ${sum} MiB`);
    }
    assert.ok(
      [...state.slots].filter(([id]) => id.startsWith('globex/')).every(([, s]) => s.value.memoryMiB === 64),
    );
    assert.deepEqual((await clusterStatus(stores[0] as ClusterStore)).pending, []);
  });

  test('a node that loses etcd past its TTL (no majority) is registered again once etcd is back', async () => {
    const lines: string[] = [];
    const store = connectCluster(etcd.endpoints.split(','));
    const membership = await joinMembership({
      store,
      record: () => record('d'),
      ttlSeconds: 2,
      reportEveryMs: 700,
      log: (line) => lines.push(line),
    });
    try {
      const registered = async () => (await readCluster(stores[0] as ClusterStore)).nodes.has('d');
      assert.ok(await registered());
      const [one, two] = etcd.members.map((m) => m.name).slice(0, 2) as [string, string];
      await etcd.kill(one);
      await etcd.kill(two);
      await new Promise((resolve) => setTimeout(resolve, 6000)); // 3 TTLs without a majority
      etcd.restart(one);
      etcd.restart(two);
      // Registered under the lease the membership holds now (a lost one is replaced), and it stays.
      const current = async () => {
        const node = (await readCluster(stores[0] as ClusterStore).catch(() => undefined))?.nodes.get('d');
        return node !== undefined && node.lease === membership.lease();
      };
      const until = Date.now() + 30_000;
      while (!(await current())) {
        assert.ok(Date.now() < until, `node d not registered again:\n${lines.join('\n')}`);
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      await new Promise((resolve) => setTimeout(resolve, 5000)); // 2.5 TTLs
      assert.ok(await current(), lines.join('\n'));
      process.stderr.write(`# membership: ${lines.join(' | ')}\n`);
    } finally {
      await membership.leave({ revoke: true });
      store.close();
    }
  });

  test('the CLI: apply and status, and clear errors for bad input and an unreachable etcd', async () => {
    const file = join(dir, 'fleet.yaml');
    writeFileSync(
      file,
      'version: 1\ntenants:\n  - { id: acme, subnet: 10.91.0.0/24 }\npools:\n  - { tenant: acme, id: web, desired: { running: 2 } }\n',
    );
    const applied = await runCli(['cluster', '--etcd', etcd.endpoints, 'apply', file]);
    assert.equal(applied.code, 0, applied.stderr);
    const revision = /revision (\d+)/.exec(applied.stdout)?.[1];
    const status = await runCli(['cluster', '--etcd', etcd.endpoints, '--json', 'status']);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(JSON.parse(status.stdout).revision, revision);

    const none = await runCli(['cluster', 'status'], { VMKIT_ETCD: '' });
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no etcd endpoints: pass --etcd/);
    const badUrl = await runCli(['cluster', '--etcd', 'localhost:2379', 'status']);
    assert.equal(badUrl.code, 2);
    assert.match(badUrl.stderr, /etcd endpoint "localhost:2379": expected http\(s\):\/\/host:port/);

    writeFileSync(
      file,
      'version: 1\ntenants:\n  - { id: acme, subnet: 10.91.0.0/24 }\npools:\n  - { tenant: acme, id: web, desired: { running: 9 } }\n',
    );
    const overQuota = await runCli(['cluster', '--etcd', etcd.endpoints, 'apply', file]);
    assert.equal(overQuota.code, 2, overQuota.stderr);
    assert.match(overQuota.stderr, /tenant acme: its pools want 9 running .* maxRunning 8/);
    writeFileSync(file, 'version: 1\npools:\n  - { tenant: nobody, id: web }\n');
    const unknownTenant = await runCli(['cluster', '--etcd', etcd.endpoints, 'apply', file]);
    assert.equal(unknownTenant.code, 2);
    assert.match(unknownTenant.stderr, /tenant nobody is not in the document/);
    const after = await runCli(['cluster', '--etcd', etcd.endpoints, '--json', 'status']);
    assert.equal(JSON.parse(after.stdout).revision, revision, 'a refused document changes nothing');

    const both = await runCli(['fleet', 'agent', 'serve', '--desired', file, '--etcd', etcd.endpoints]);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /--desired and --etcd/);

    // A port where nothing listens: the error names etcd and comes within the CLI's bound.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as { port: number };
    await new Promise((resolve) => probe.close(resolve));
    const began = Date.now();
    const unreachable = await runCli(['cluster', '--etcd', `http://127.0.0.1:${port}`, 'status'], {}, 60_000);
    assert.equal(unreachable.code, 1, unreachable.stderr);
    assert.match(unreachable.stderr, new RegExp(`etcd at http://127.0.0.1:${port}`));
    process.stderr.write(`# unreachable etcd reported after ${Date.now() - began} ms\n`);
  });
});

// The cluster's pure parts: the slots a document asks for, a node's share of it, best-of-K, and
// the scheduler's plan from a read of the cluster.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { NodeRecord } from '../../src/fleet/cluster/etcd.js';
import { poolsFailingOn, trackFailures } from '../../src/fleet/cluster/failing.js';
import { planPlacement } from '../../src/fleet/cluster/placement.js';
import { bestOfK, desiredSlots, parseSlotId, shareOf } from '../../src/fleet/cluster/slots.js';
import type { ClusterState } from '../../src/fleet/cluster/state.js';
import { TunnelSet, tunnelHubs } from '../../src/fleet/cluster/tunnels.js';
import { parseDesired } from '../../src/fleet/desired/schema.js';
import { nextAddress, parseSubnet } from '../../src/fleet/state/subnet.js';

const doc = parseDesired(
  JSON.stringify({
    version: 1,
    tenants: [
      { id: 'acme', subnet: '10.91.0.0/24' },
      { id: 'globex', subnet: '10.92.0.0/24' },
    ],
    pools: [
      { tenant: 'acme', id: 'web', memoryMiB: 256, desired: { running: 2, warm: 1, sleeping: 1 } },
      { tenant: 'globex', id: 'jobs', desired: { running: 1 } },
    ],
  }),
);

function node(name: string, memoryMiB: number): NodeRecord {
  return {
    name,
    agentId: `agent-${name}`,
    advertise: `https://${name}:7443`,
    capacity: { memoryMiB, vcpus: 2 },
    use: { memoryMiB: 0, running: 0, instances: 0 },
    instances: [],
    startedAt: '',
    reportedAt: '',
  };
}

function state(
  nodes: Record<string, number>,
  slots: Record<string, string> = {},
  booked: Record<string, number> = {},
): ClusterState {
  return {
    revision: '10',
    desired: { doc, revision: '5' },
    nodes: new Map(
      Object.entries(nodes).map(([name, memory], i) => [
        name,
        { value: node(name, memory), modRevision: '3', lease: String(100 + i) },
      ]),
    ),
    slots: new Map(
      Object.entries(slots).map(([id, on]) => [
        id,
        { value: { node: on, memoryMiB: 256 }, modRevision: '6' },
      ]),
    ),
    booked: new Map(
      Object.entries(booked).map(([on, mib]) => [on, { value: { memoryMiB: mib }, modRevision: '6' }]),
    ),
    drained: new Map(),
    moves: new Map(),
    standbys: new Map(),
  };
}

describe('cluster slots and placement', () => {
  test('a document has one slot per instance it asks for; a Sleeping one books no memory', () => {
    const slots = desiredSlots(doc);
    assert.deepEqual(
      slots.map((s) => `${s.id}:${s.memoryMiB}`),
      [
        'acme/web/running-0:256',
        'acme/web/running-1:256',
        'acme/web/warm-0:256',
        'acme/web/sleeping-0:0',
        'globex/jobs/running-0:128',
      ],
    );
    assert.deepEqual(parseSlotId('acme/web/warm-0'), { pool: 'acme/web', kind: 'warm' });
    assert.equal(parseSlotId('acme/web/other-0'), undefined);
  });

  test("a node's share lists every tenant and pool, with the counts of its own slots", () => {
    const share = shareOf(doc, ['acme/web/running-1', 'acme/web/sleeping-0', 'not/a/slot']);
    assert.deepEqual(
      share.tenants.map((t) => t.id),
      ['acme', 'globex'],
    );
    assert.deepEqual(
      share.pools.map((p) => [p.id, p.desired]),
      [
        ['web', { running: 1, warm: 0, sleeping: 1 }],
        ['jobs', { running: 0, warm: 0, sleeping: 0 }],
      ],
    );
  });

  test('best of K takes the freest of K drawn among those with room; none when none has room', () => {
    const candidates = [
      { node: 'a', freeMiB: 100 },
      { node: 'b', freeMiB: 900 },
      { node: 'c', freeMiB: 500 },
    ];
    assert.equal(bestOfK(candidates, 128, 3)?.node, 'b');
    assert.equal(bestOfK(candidates, 600, 3)?.node, 'b');
    assert.equal(bestOfK(candidates, 1000, 3), undefined);
    // K = 1 takes the one drawn: c for one draw, although b has more room; b for another.
    const drawn = (draws: number[]) => bestOfK(candidates, 128, 1, () => draws.shift() ?? 0)?.node;
    assert.equal(drawn([0, 0]), 'c');
    assert.equal(drawn([0.99, 0]), 'b');
  });

  test('the plan places what has no node, moves what sits on a dead node, removes what the document dropped', () => {
    const plan = planPlacement(
      state(
        { a: 4096, b: 4096 },
        { 'acme/web/running-0': 'a', 'acme/web/running-1': 'gone', 'acme/old/running-0': 'b' },
        { a: 256, gone: 256, b: 256 },
      ),
      3,
    );
    const moves = plan.moves.map((m) =>
      m.kind === 'remove' ? `remove ${m.slot} from ${m.from}` : `place ${m.slot.id} from ${m.from ?? '-'}`,
    );
    assert.deepEqual(moves, [
      'remove acme/old/running-0 from b',
      'place acme/web/running-1 from gone',
      'place acme/web/warm-0 from -',
      'place acme/web/sleeping-0 from -',
      'place globex/jobs/running-0 from -',
    ]);
    assert.deepEqual(plan.unplaced, []);
  });

  test('the plan spreads by free memory and leaves slots unplaced rather than overbook', () => {
    const spread = planPlacement(state({ a: 1024, b: 1024, c: 1024 }), 3);
    const on = (to: string) => spread.moves.filter((m) => m.kind === 'place' && m.to === to).length;
    assert.ok(on('a') >= 1 && on('b') >= 1 && on('c') >= 1, JSON.stringify(spread.moves));
    const tight = planPlacement(state({ a: 600 }), 3);
    // 600 MiB: two of the 256 MiB slots, the Sleeping one (0) and the 128 MiB one do not fit past it.
    const placed = tight.moves
      .filter((m) => m.kind === 'place')
      .map((m) => (m.kind === 'place' ? m.slot.id : ''));
    assert.deepEqual(placed, ['acme/web/running-0', 'acme/web/running-1', 'acme/web/sleeping-0']);
    assert.deepEqual(
      tight.unplaced.map((s) => s.id),
      ['acme/web/warm-0', 'globex/jobs/running-0'],
    );
  });

  test("a slot whose pool's memory changed is booked again on its node, or moves when it no longer fits", () => {
    // globex/jobs/running-0 was placed at 256 MiB (the helper's value); the document says 128.
    const rebook = planPlacement(
      state({ a: 4096 }, { 'globex/jobs/running-0': 'a' }, { a: 256 }),
      3,
    ).moves.find((m) => m.kind === 'place' && m.slot.id === 'globex/jobs/running-0');
    assert.deepEqual(rebook?.kind === 'place' && [rebook.to, rebook.from, rebook.previousMiB], [
      'a',
      'a',
      256,
    ]);
    // acme/web/running-0 at 256 on a full node a: the document's 256 is the same, nothing to do.
    const same = planPlacement(state({ a: 256 }, { 'acme/web/running-0': 'a' }, { a: 256 }), 3);
    assert.ok(!same.moves.some((m) => m.kind === 'place' && m.slot.id === 'acme/web/running-0'));
  });

  test('a node that keeps failing a pool gets none of its slots; the ones it has move where there is room', () => {
    const failing = (converges: number) => [
      { pool: 'acme/web', error: 'image build failed', since: '2026-12-07T00:00:00Z', converges },
    ];
    const withFailing = (cluster: ClusterState, node: string, converges: number) => {
      const entry = cluster.nodes.get(node);
      if (entry) entry.value = { ...entry.value, failing: failing(converges) };
      return cluster;
    };
    const where = (plan: ReturnType<typeof planPlacement>, id: string) => {
      const move = plan.moves.find((m) => m.kind === 'place' && m.slot.id === id);
      return move?.kind === 'place'
        ? `${move.from ?? '-'} -> ${move.to}${move.reason ? ` (${move.reason})` : ''}`
        : 'stays';
    };
    const slots = { 'acme/web/running-0': 'a', 'globex/jobs/running-0': 'a' };
    // Three converges in a row: acme/web's slot leaves a; globex's stays; new acme/web slots go to b.
    const three = planPlacement(withFailing(state({ a: 4096, b: 4096 }, slots, { a: 512 }), 'a', 3), 3);
    assert.equal(where(three, 'acme/web/running-0'), 'a -> b (a keeps failing pool acme/web)');
    assert.equal(where(three, 'globex/jobs/running-0'), 'a -> a'); // booked again at 128 MiB, on a
    for (const id of ['acme/web/running-1', 'acme/web/warm-0', 'acme/web/sleeping-0'])
      assert.equal(where(three, id), '- -> b');
    // Two in a row is not yet failing: nothing moves off a.
    const two = planPlacement(withFailing(state({ a: 4096, b: 4096 }, slots, { a: 512 }), 'a', 2), 3);
    assert.equal(where(two, 'acme/web/running-0'), 'stays');
    // No other node with room: the slot stays where it is, rather than wait on no node.
    const alone = planPlacement(withFailing(state({ a: 4096 }, slots, { a: 512 }), 'a', 5), 3);
    assert.equal(where(alone, 'acme/web/running-0'), 'stays');
    assert.deepEqual(
      alone.unplaced.map((s) => s.id),
      ['acme/web/running-1', 'acme/web/warm-0', 'acme/web/sleeping-0'],
    );
  });

  test('a drained node gets no slot; the ones it holds are asked to move with their state where there is room, or stay', () => {
    const drained = (cluster: ClusterState, node: string) => {
      cluster.drained = new Map([[node, { since: '2026-12-07T00:00:00Z' }]]);
      return cluster;
    };
    const slots = { 'acme/web/running-0': 'a', 'globex/jobs/running-0': 'a' };
    const plan = planPlacement(drained(state({ a: 4096, b: 4096 }, slots, { a: 512 }), 'a'), 3);
    const places = plan.moves.flatMap((m) =>
      m.kind === 'place' ? [`${m.slot.id} ${m.from ?? '-'} -> ${m.to}`] : [],
    );
    assert.deepEqual(places, [
      'acme/web/running-1 - -> b',
      'acme/web/warm-0 - -> b',
      'acme/web/sleeping-0 - -> b',
    ]);
    assert.deepEqual(
      plan.requests.map((r) => `${r.slot.id} ${r.from} -> ${r.to}`),
      ['acme/web/running-0 a -> b', 'globex/jobs/running-0 a -> b'],
    );
    // The only node drained: nothing can move, and nothing new is placed.
    const alone = planPlacement(drained(state({ a: 4096 }, slots, { a: 512 }), 'a'), 3);
    assert.deepEqual(alone.moves.filter((m) => m.kind === 'place').length, 0, JSON.stringify(alone.moves));
    assert.equal(alone.requests.length, 0);
    assert.equal(alone.unplaced.length, 3);
  });

  test('a move under way is left alone; one that failed moves cold; records done with are stale', () => {
    const cluster = state(
      { a: 4096, b: 4096 },
      { 'acme/web/running-0': 'a', 'globex/jobs/running-0': 'a', 'acme/web/running-1': 'b' },
      { a: 512, b: 256 },
    );
    cluster.drained = new Map([['a', { since: '2026-12-07T00:00:00Z' }]]);
    const record = (from: string, extra: object = {}) => ({
      value: { from, to: 'b', by: 'drain' as const, since: '', ...extra },
      modRevision: '8',
    });
    cluster.moves = new Map([
      ['acme/web/running-0', record('a')],
      ['globex/jobs/running-0', record('a', { failed: 'no room', failedAt: new Date().toISOString() })],
      // Its slot is on b, not on the node the record names: done with.
      ['acme/web/running-1', record('a')],
      ['acme/web/gone-0', record('a')],
    ]);
    const plan = planPlacement(cluster, 3);
    assert.deepEqual(plan.requests, []);
    const cold = plan.moves.flatMap((m) =>
      m.kind === 'place' && m.from === 'a' ? [`${m.slot.id} -> ${m.to}: ${m.reason}`] : [],
    );
    assert.deepEqual(cold, ['globex/jobs/running-0 -> b: a is drained']);
    assert.deepEqual(plan.stale.sort(), ['acme/web/gone-0', 'acme/web/running-1']);
    // A failed `cluster move` of a node not drained is kept a while to be read, then stale.
    cluster.drained = new Map();
    cluster.moves = new Map([
      ['acme/web/running-0', record('a', { by: 'move', failed: 'x', failedAt: new Date().toISOString() })],
      ['globex/jobs/running-0', record('a', { by: 'move', failed: 'x', failedAt: '2026-01-01T00:00:00Z' })],
    ]);
    assert.deepEqual(planPlacement(cluster, 3).stale, ['globex/jobs/running-0']);
  });

  test("a node's failing pools: counted per converge in a row, cleared by one without a failure", () => {
    const report = (targets: string[]) => ({
      phases: [
        {
          phase: 'scale' as const,
          actions: targets.map((target) => ({
            phase: 'scale' as const,
            action: 'create',
            target,
            outcome: 'failed' as const,
            error: `cannot start ${target}\nconsole tail ...`,
          })),
        },
      ],
    });
    const t0 = new Date('2026-12-07T10:00:00Z');
    const first = trackFailures([], report(['acme/web/a1b2c3']), t0);
    assert.deepEqual(first, [
      { pool: 'acme/web', error: 'cannot start acme/web/a1b2c3', since: t0.toISOString(), converges: 1 },
    ]);
    const second = trackFailures(first, report(['acme/web/d4e5f6', 'globex/jobs']), new Date());
    assert.deepEqual(
      second.map((p) => [p.pool, p.converges, p.since]),
      [
        ['acme/web', 2, t0.toISOString()],
        ['globex/jobs', 1, second[1]?.since],
      ],
    );
    // A tenant-wide failure counts against the tenant's pools that were failing.
    const tenantWide = trackFailures(second, report(['acme']));
    assert.deepEqual(
      tenantWide.map((p) => [p.pool, p.converges]),
      [['acme/web', 3]],
    );
    assert.ok(poolsFailingOn({ failing: tenantWide }).has('acme/web'));
    assert.deepEqual(trackFailures(tenantWide, { phases: [] }), []);
  });

  test('each node takes addresses from its own slice of a tenant subnet', () => {
    const subnet = parseSubnet('10.91.0.0/24');
    assert.equal(nextAddress(subnet, new Set()), '10.91.0.2/24');
    assert.equal(nextAddress(subnet, new Set(), { index: 0, of: 16 }), '10.91.0.2/24');
    assert.equal(nextAddress(subnet, new Set(), { index: 1, of: 16 }), '10.91.0.17/24');
    assert.equal(nextAddress(subnet, new Set(), { index: 15, of: 16 }), '10.91.0.227/24');
    // A slice of 15 addresses: the 16th instance of a tenant on one node finds none.
    const used = new Set(Array.from({ length: 15 }, (_, n) => `10.91.0.${17 + n}/24`));
    assert.equal(nextAddress(subnet, used, { index: 1, of: 16 }), undefined);
    assert.equal(nextAddress(subnet, used), '10.91.0.2/24');
  });

  test("a tenant's hub is the first of the alive nodes holding its slots; only the others tunnel to it", () => {
    const cluster = state(
      { a: 4096, b: 4096, c: 4096 },
      {
        'acme/web/running-0': 'b',
        'acme/web/running-1': 'c',
        'acme/web/warm-0': 'gone',
        'globex/jobs/running-0': 'a',
      },
    );
    assert.deepEqual([...tunnelHubs(cluster, 'c')], [['acme', 'b']]);
    assert.deepEqual([...tunnelHubs(cluster, 'b')], []); // the hub itself
    assert.deepEqual([...tunnelHubs(cluster, 'a')], []); // globex is on a alone; a holds no acme slot
  });

  test('a tunnel that keeps failing is tried every second but said once (then once a minute)', async () => {
    const lines: string[] = [];
    const cluster = state({ b: 4096, c: 4096 }, { 'acme/web/running-0': 'b', 'acme/web/running-1': 'c' });
    // The hub's URL (https://b:7443) and the certificate files do not exist: every attempt fails.
    const missing = '/nonexistent/vmkit-tunnel-test';
    const tunnels = new TunnelSet('c', missing, { ca: missing, cert: missing, key: missing }, (line) =>
      lines.push(line),
    );
    tunnels.update(cluster);
    await new Promise((resolve) => setTimeout(resolve, 3500)); // four attempts
    tunnels.closeAll();
    const failures = lines.filter((line) => line.startsWith('tunnel: tenant acme: node b:'));
    assert.equal(failures.length, 1, lines.join('\n'));
    assert.match(failures[0] as string, /; trying again every second$/);
  });

  test('nothing is planned before a document is applied', () => {
    const empty = { ...state({ a: 1024 }, { 'acme/web/running-0': 'a' }) };
    delete empty.desired;
    assert.deepEqual(planPlacement(empty, 3), { moves: [], unplaced: [], requests: [], stale: [] });
  });
});

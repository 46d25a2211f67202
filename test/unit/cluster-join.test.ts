// Joining a cluster, with real agents (CLI processes) on a real one-member etcd, no document and so
// no VMs: an agent whose etcd does not answer serves its host's API read-only and joins once etcd
// is back; a second agent under a node name another agent holds is refused before it does
// anything; a restart of the same agent (its fleet folder) takes its name over within the TTL.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initCerts } from '../../src/fleet/agent/certs.js';
import { AgentCallError, connectAgent } from '../../src/fleet/agent/client.js';
import type { AgentServer } from '../../src/fleet/agent/server.js';
import { startDepartures } from '../../src/fleet/cluster/departures.js';
import { type ClusterStore, connectCluster, KEYS, type NodeRecord } from '../../src/fleet/cluster/etcd.js';
import { type FailingPool, trackFailures } from '../../src/fleet/cluster/failing.js';
import { type ClusterMember, joinCluster } from '../../src/fleet/cluster/member.js';
import { readCluster } from '../../src/fleet/cluster/state.js';
import { applyDocument, type ClusterStatus, clusterStatus } from '../../src/fleet/cluster/status.js';
import { parseDesired } from '../../src/fleet/desired/schema.js';
import {
  type AgentProcess,
  clusterRunDir,
  type EtcdCluster,
  etcdServerTls,
  exited,
  startClusterAgent,
  startEtcdCluster,
} from '../etcd.js';
import { cli, runCli } from '../helpers.js';

const dir = await clusterRunDir('vmkit-join-');
const certs = join(dir, 'certs');

/** A node's record as a member with no agent behind it reports it. */
function bareRecord(name: string, memoryMiB: number, extra: Partial<NodeRecord> = {}): NodeRecord {
  return {
    name,
    agentId: `agent-${name}`,
    advertise: `https://127.0.0.1:1/${name}`,
    capacity: { memoryMiB, vcpus: 2 },
    use: { memoryMiB: 0, running: 0, instances: extra.instances?.length ?? 0 },
    instances: [],
    startedAt: new Date().toISOString(),
    reportedAt: new Date().toISOString(),
    ...extra,
  };
}

/** The cluster document of these tests: tenant acme's pool web, `running` instances of 128 MiB. */
const webDocument = (running: number) =>
  parseDesired(
    JSON.stringify({
      version: 1,
      tenants: [{ id: 'acme', subnet: '10.91.0.0/24' }],
      pools: [{ tenant: 'acme', id: 'web', memoryMiB: 128, desired: { running } }],
    }),
  );

/** A member with no agent behind it: it converges nothing. */
const bareMember = (store: ClusterStore, node: string, memoryMiB: number, extra: Partial<NodeRecord> = {}) =>
  joinCluster({
    store,
    node,
    record: () => bareRecord(node, memoryMiB, extra),
    converge: async () => false,
    ttlSeconds: 5,
  });
// After every describe of the file: each runs an etcd of its own in it.
after(() => rmSync(dir, { recursive: true, force: true }));

describe('joining the cluster', { timeout: 180_000 }, () => {
  let etcd: EtcdCluster;
  let store: ClusterStore;
  const agents: AgentProcess[] = [];

  const startAgent = (
    fleet: string,
    node: string,
    how: { endpoints?: string; env?: NodeJS.ProcessEnv } = {},
  ): AgentProcess => {
    const agent = startClusterAgent(cli, {
      fleetDir: join(dir, fleet),
      endpoints: how.endpoints ?? etcd.endpoints,
      node,
      certs,
      args: ['--lease-ttl', '4'],
      ...(how.env ? { env: how.env } : {}),
    });
    agents.push(agent);
    return agent;
  };

  /** Waits (at most `timeoutMs`) until the agent's log matches `pattern`; fails with the log if not. */
  const logged = async (agent: AgentProcess, pattern: RegExp, timeoutMs = 30_000) => {
    const until = Date.now() + timeoutMs;
    while (!pattern.test(agent.log())) {
      assert.ok(
        Date.now() < until,
        `no ${pattern} in the agent's log within ${timeoutMs} ms:\n${agent.log()}`,
      );
      assert.equal(agent.child.exitCode, null, `the agent exited:\n${agent.log()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return pattern.exec(agent.log()) as RegExpExecArray;
  };

  const client = async (agent: AgentProcess) => {
    const [, url] = await logged(agent, /listening on (https:\S+)/);
    return connectAgent({
      url: url as string,
      ca: join(certs, 'ca.pem'),
      cert: join(certs, 'client.pem'),
      key: join(certs, 'client.key'),
    });
  };

  const registeredAs = async (node: string) => (await readCluster(store)).nodes.get(node);

  before(async () => {
    etcd = await startEtcdCluster(join(dir, 'etcd'), 1);
    store = connectCluster(etcd.endpoints.split(','));
    await initCerts(certs, { ca: true });
  });

  after(async () => {
    for (const { child } of agents) {
      child.kill('SIGKILL');
      await exited(child, 'an agent');
    }
    store?.close();
    await etcd?.stop();
  });

  test('with etcd away, the agent serves its API read-only, and joins once etcd is back', async () => {
    const member = etcd.members[0]?.name as string;
    await etcd.kill(member);
    const agent = startAgent('one', 'n1');
    await logged(
      agent,
      /node n1 has not joined the cluster \(.*etcd at http:\/\/127\.0\.0\.1:\d+.*\): its API is read-only/,
    );
    const api = await client(agent);
    try {
      assert.deepEqual(await api.instances(), [], 'a read is served');
      const refused = await api.reconcile().then(
        () => assert.fail('a reconcile was accepted while the node had not joined'),
        (error: unknown) => error,
      );
      assert.ok(refused instanceof AgentCallError, String(refused));
      assert.equal(refused.statusCode, 503);
      assert.match(refused.message, /node n1 has not joined the cluster .*read-only/);

      etcd.restart(member);
      await logged(agent, /node n1 joined the cluster after \d+ failed attempt/, 60_000);
      assert.ok(await registeredAs('n1'));
      const report = (await api.reconcile()) as { document: string };
      assert.equal(report.document, 'none yet', 'changes are accepted once the node joined');
    } finally {
      api.close();
    }
  });

  test('a second agent under a name another agent holds is refused, and changes nothing', async () => {
    const before = await registeredAs('n1');
    const second = startAgent('two', 'n1');
    await exited(second.child, 'the second agent of node n1');
    assert.equal(second.child.exitCode, 2, second.log());
    assert.match(
      second.log(),
      /node name n1 is held by another agent \(https:\/\/127\.0\.0\.1:\d+, up since .*\) under a live lease/,
    );
    assert.doesNotMatch(second.log(), /registered under lease/);
    // Its own reports go on (reportedAt changes): the lease and the agent are the same.
    const now = await registeredAs('n1');
    assert.deepEqual(
      { lease: now?.lease, agentId: now?.value.agentId, advertise: now?.value.advertise },
      { lease: before?.lease, agentId: before?.value.agentId, advertise: before?.value.advertise },
      "the first agent's record is its own still",
    );
  });

  test('a restart of the same agent within the TTL takes its name over', async () => {
    const first = agents[0] as AgentProcess;
    const before = await registeredAs('n1');
    first.child.kill('SIGTERM');
    await exited(first.child, 'the agent of node n1 after SIGTERM');
    assert.ok(await registeredAs('n1'), 'the record outlives its agent until the TTL');
    const again = startAgent('one', 'n1');
    await logged(again, /membership: node n1 registered under lease/);
    const now = await registeredAs('n1');
    assert.ok(now && before && now.lease !== before.lease, 'registered again under a new lease');
    assert.notEqual(now?.value.startedAt, before?.value.startedAt);
  });

  test('TLS to etcd: with a client certificate the CLI and an agent get in; without one, or over http, a clear error', async () => {
    // etcd serves its clients over TLS with a certificate from the agents' CA, and asks each
    // client for one from that CA.
    const tls = await startEtcdCluster(
      join(dir, 'etcd-tls'),
      1,
      60_000,
      await etcdServerTls(certs, join(dir, 'etcd-tls-certs')),
    );
    const client = {
      ca: join(certs, 'ca.pem'),
      cert: join(certs, 'client.pem'),
      key: join(certs, 'client.key'),
    };
    const tlsStore = connectCluster(tls.endpoints.split(','), { tls: client });
    try {
      assert.match(tls.endpoints, /^https:\/\/127\.0\.0\.1:\d+$/);
      const agent = startAgent('tls', 'n-tls', {
        endpoints: tls.endpoints,
        env: { VMKIT_ETCD_CA: client.ca, VMKIT_ETCD_CERT: client.cert, VMKIT_ETCD_KEY: client.key },
      });
      await logged(agent, /membership: node n-tls registered under lease/);
      assert.ok((await readCluster(tlsStore)).nodes.has('n-tls'));

      const withCert = ['--etcd-ca', client.ca, '--etcd-cert', client.cert, '--etcd-key', client.key];
      const status = await runCli(['cluster', '--etcd', tls.endpoints, ...withCert, '--json', 'status']);
      assert.equal(status.code, 0, status.stderr);
      assert.deepEqual(
        (JSON.parse(status.stdout) as ClusterStatus).nodes.map((n) => [n.name, n.alive]),
        [['n-tls', true]],
      );
      const noCert = await runCli(
        ['cluster', '--etcd', tls.endpoints, '--etcd-ca', client.ca, 'status'],
        {},
        60_000,
      );
      assert.equal(noCert.code, 1, noCert.stderr);
      assert.match(
        noCert.stderr,
        new RegExp(
          `reading the cluster: etcd at ${tls.endpoints}: etcd refused this client: it asks for a client certificate`,
        ),
      );
      process.stderr.write(`# without a client certificate: ${noCert.stderr.trim()}\n`);
      const otherCa = join(dir, 'other-certs');
      await initCerts(otherCa, { ca: true });
      const wrongCa = await runCli(
        [
          'cluster',
          '--etcd',
          tls.endpoints,
          ...withCert.slice(2),
          '--etcd-ca',
          join(otherCa, 'ca.pem'),
          'status',
        ],
        {},
        60_000,
      );
      assert.equal(wrongCa.code, 1, wrongCa.stderr);
      assert.match(wrongCa.stderr, /etcd's certificate is not signed by the CA given \(--etcd-ca\)/);
      const overHttp = await runCli(['cluster', '--etcd', etcd.endpoints, ...withCert, 'status']);
      assert.equal(overHttp.code, 2, overHttp.stderr);
      assert.match(overHttp.stderr, /TLS to etcd \(--etcd-ca\) needs https:\/\/ endpoints: http:\/\/127/);
      const halfPair = await runCli([
        'cluster',
        '--etcd',
        tls.endpoints,
        '--etcd-ca',
        client.ca,
        '--etcd-cert',
        client.cert,
        'status',
      ]);
      assert.equal(halfPair.code, 2, halfPair.stderr);
      assert.match(halfPair.stderr, /--etcd-cert and --etcd-key go together/);
      const missing = await runCli([
        'cluster',
        '--etcd',
        tls.endpoints,
        '--etcd-ca',
        join(dir, 'nope.pem'),
        'status',
      ]);
      assert.equal(missing.code, 2, missing.stderr);
      assert.match(missing.stderr, /cannot read --etcd-ca .*nope\.pem: ENOENT/);
      agent.child.kill('SIGTERM');
      await exited(agent.child, 'the agent on the TLS etcd');
    } finally {
      tlsStore.close();
      await tls.stop();
    }
  });
});

describe('a node that keeps failing a pool', { timeout: 120_000 }, () => {
  test('its converges are tried again, it reports the pool failing, and the scheduler moves the slot off it', async () => {
    const etcd = await startEtcdCluster(join(dir, 'etcd-failing'), 1);
    const store = connectCluster(etcd.endpoints.split(','));
    const members: ClusterMember[] = [];
    const lines: string[] = [];
    try {
      await applyDocument(store, webDocument(1));
      // fa has the most room, so the slot goes there first; its converges fail acme/web.
      let failing: FailingPool[] = [];
      let convergesOnFa = 0;
      const record = (name: string, memoryMiB: number, failingNow: () => FailingPool[]): NodeRecord =>
        bareRecord(name, memoryMiB, { failing: failingNow() });
      const slotOf = async () => (await readCluster(store)).slots.get('acme/web/running-0')?.value.node;
      members.push(
        await joinCluster({
          store,
          node: 'fa',
          record: () => record('fa', 4096, () => failing),
          converge: async () => {
            const mine = (await slotOf()) === 'fa';
            if (mine) convergesOnFa += 1;
            const report = {
              phases: mine
                ? [
                    {
                      phase: 'scale' as const,
                      actions: [
                        {
                          phase: 'scale' as const,
                          action: 'create',
                          target: 'acme/web/abc123',
                          outcome: 'failed' as const,
                          error: 'no image here',
                        },
                      ],
                    },
                  ]
                : [],
            };
            failing = trackFailures(failing, report);
            return failing.length > 0;
          },
          ttlSeconds: 5,
          log: (line) => lines.push(`fa: ${line}`),
        }),
      );
      const until = async (what: string, check: () => Promise<boolean>, timeoutMs: number) => {
        const deadline = Date.now() + timeoutMs;
        while (!(await check())) {
          assert.ok(Date.now() < deadline, `${what}: not within ${timeoutMs} ms\n${lines.join('\n')}`);
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      };
      await until('the slot on fa', async () => (await slotOf()) === 'fa', 20_000);
      members.push(
        await joinCluster({
          store,
          node: 'fb',
          record: () => record('fb', 256, () => []),
          converge: async () => false,
          ttlSeconds: 5,
          log: (line) => lines.push(`fb: ${line}`),
        }),
      );
      // Converges on fa in a row: the first, then tried again 5 s and 10 s later; then the slot moves.
      // The scheduler says why once its transaction is in: the line can come after etcd shows the move.
      const movedForFailing =
        /placed acme\/web\/running-0 on fb \(from fa: fa keeps failing pool acme\/web\)/;
      await until(
        'the slot moved to fb, for the failures on fa',
        async () => (await slotOf()) === 'fb' && lines.some((line) => movedForFailing.test(line)),
        60_000,
      );
      assert.ok(convergesOnFa >= 3, `fa converged ${convergesOnFa} time(s) with the slot`);
      const status = await clusterStatus(store);
      const fa = status.nodes.find((n) => n.name === 'fa');
      assert.equal(fa?.failing[0]?.pool, 'acme/web');
      assert.match(fa?.failing[0]?.error ?? '', /no image here/);
    } finally {
      for (const member of members) await member.leave();
      store.close();
      await etcd.stop();
    }
  });

  test('drain: the slots move off the node and none come until uncordon; an unknown node is refused', async () => {
    const etcd = await startEtcdCluster(join(dir, 'etcd-drain'), 1);
    const store = connectCluster(etcd.endpoints.split(','));
    const members: ClusterMember[] = [];
    const document = webDocument;
    const slotsOn = async (node: string) =>
      [...(await readCluster(store)).slots.values()].filter((s) => s.value.node === node).length;
    try {
      for (const node of ['da', 'db']) members.push(await bareMember(store, node, 4096));
      await applyDocument(store, document(2));
      const deadline = Date.now() + 20_000;
      while ((await slotsOn('da')) + (await slotsOn('db')) < 2 || (await slotsOn('db')) === 0) {
        assert.ok(Date.now() < deadline, 'the two slots were not spread over da and db');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      // These members run no departures (an agent's, which ships an instance's state): each move
      // the scheduler asks of db is marked failed, as a node that cannot ship does, so it moves cold.
      let draining = true;
      const movesFailed: string[] = [];
      const failMoves = (async () => {
        while (draining) {
          for (const [slot, move] of (await readCluster(store)).moves) {
            if (move.value.failed) continue;
            const failed = {
              ...move.value,
              failed: 'no departures here',
              failedAt: new Date().toISOString(),
            };
            await store.kv.put(KEYS.move(slot)).value(JSON.stringify(failed)).exec();
            movesFailed.push(`${slot} ${move.value.from} -> ${move.value.to}`);
          }
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      })();
      const drained = await runCli(
        ['cluster', '--etcd', etcd.endpoints, 'drain', 'db', '--timeout', '30'],
        {},
        60_000,
      ).finally(() => {
        draining = false;
      });
      await failMoves;
      assert.equal(movesFailed.length, 1, movesFailed.join('\n'));
      assert.match(movesFailed[0] ?? '', /^acme\/web\/running-\d db -> da$/);
      assert.equal(drained.code, 0, drained.stderr);
      assert.match(drained.stdout, /node db drained \(vmkit cluster uncordon db to use it again\)/);
      // Progress as it goes (the one slot may have moved before the first read).
      assert.match(
        drained.stderr,
        /node db is drained: no slot goes there[\s\S]*node db: 0 slot\(s\) left, 0 running/,
      );
      assert.equal(await slotsOn('da'), 2);
      const status = await clusterStatus(store);
      assert.ok(status.nodes.find((n) => n.name === 'db')?.drainedSince);
      // Nothing new goes to a drained node, however much room it has.
      await applyDocument(store, document(3));
      const placed = Date.now() + 20_000;
      while ((await slotsOn('da')) < 3) {
        assert.ok(Date.now() < placed, 'the third slot was not placed on da');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.equal(await slotsOn('db'), 0);

      const unknown = await runCli(['cluster', '--etcd', etcd.endpoints, 'drain', 'nosuch']);
      assert.equal(unknown.code, 2, unknown.stderr);
      assert.match(unknown.stderr, /no node nosuch in the cluster \(nodes: da, db\)/);
      const uncordon = await runCli(['cluster', '--etcd', etcd.endpoints, 'uncordon', 'db']);
      assert.equal(uncordon.code, 0, uncordon.stderr);
      assert.equal(uncordon.stdout, 'node db takes slots again\n');
      await applyDocument(store, document(4)); // the new slot goes to the freest node: db
      const until = Date.now() + 20_000;
      while ((await slotsOn('db')) === 0) {
        assert.ok(Date.now() < until, 'no slot on db after uncordon');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const again = await runCli(['cluster', '--etcd', etcd.endpoints, 'uncordon', 'db']);
      assert.equal(again.stdout, 'node db was not drained\n');
    } finally {
      for (const member of members) await member.leave();
      store.close();
      await etcd.stop();
    }
  });

  test('a restart within the TTL keeps its slots: the lease is renewed to the end of a shutdown, and the restart registers before its first converge', async () => {
    const etcd = await startEtcdCluster(join(dir, 'etcd-resume'), 1);
    const store = connectCluster(etcd.endpoints.split(','));
    const members: ClusterMember[] = [];
    const slotsOn = async (node: string) =>
      [...(await readCluster(store)).slots.values()].filter((s) => s.value.node === node).length;
    /** db again, after its previous run let go of its lease; its first converge takes 6 s. */
    const restartDb = (resumes: boolean) =>
      joinCluster({
        store,
        node: 'db',
        record: () => bareRecord('db', 4096),
        converge: async () => {
          if (!converged) await new Promise((resolve) => setTimeout(resolve, 6000));
          converged = true;
          return false;
        },
        resumes,
        ttlSeconds: 3,
      });
    let converged = true;
    try {
      members.push(await bareMember(store, 'da', 4096));
      let db = await bareMember(store, 'db', 4096);
      members.push(db);
      await applyDocument(store, webDocument(2));
      const deadline = Date.now() + 20_000;
      while ((await slotsOn('db')) !== 1 || (await slotsOn('da')) !== 1) {
        assert.ok(Date.now() < deadline, 'the two slots were not spread over da and db');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      await db.leave();
      converged = false;
      db = await restartDb(true);
      members.push(db);
      assert.equal(await slotsOn('db'), 1, 'resumed: its slot stayed');
      assert.ok((await readCluster(store)).nodes.get('db'), 'resumed: registered');
      // An agent's shutdown (beforeLapse) longer than the TTL: the lease is renewed until it ends.
      let registeredAfterShutdown = false;
      await db.leave(async () => {
        await new Promise((resolve) => setTimeout(resolve, 5000));
        registeredAfterShutdown = (await readCluster(store)).nodes.has('db');
      });
      assert.ok(registeredAfterShutdown, 'still registered at the end of a 5 s shutdown (TTL 3 s)');
      // The same restart converging first (as a node coming back after its TTL does) loses it.
      await db.leave();
      converged = false;
      members.push(await restartDb(false));
      assert.equal(await slotsOn('db'), 0, 'converged first: its slot moved while it converged');
    } finally {
      for (const member of members) await member.leave();
      store.close();
      await etcd.stop();
    }
  });

  test('cluster move: refused with the reason up front; a move its node cannot make fails with the reason', async () => {
    const etcd = await startEtcdCluster(join(dir, 'etcd-move'), 1);
    const store = connectCluster(etcd.endpoints.split(','));
    const members: ClusterMember[] = [];
    const join_ = async (node: string, memoryMiB: number, instances: NodeRecord['instances'] = []) =>
      members.push(await bareMember(store, node, memoryMiB, { instances }));
    const move = (...args: string[]) =>
      runCli(['cluster', '--etcd', etcd.endpoints, 'move', ...args], {}, 60_000);
    const until = async (what: string, check: () => Promise<boolean>, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      while (!(await check())) {
        assert.ok(Date.now() < deadline, `${what}: not within ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    };
    try {
      await join_('ma', 4096, [
        { path: 'acme/web/i1', state: 'Running' },
        { path: 'acme/web/i2', state: 'Stopped' },
      ]);
      await applyDocument(store, webDocument(1));
      await until('the slot on ma', async () => (await readCluster(store)).slots.size === 1, 20_000);
      await join_('mb', 4096);
      await join_('mc', 64);
      await until('three nodes', async () => (await readCluster(store)).nodes.size === 3, 20_000);
      const refusals: Array<[string[], RegExp]> = [
        [['acme/web/i1', 'nosuch'], /no node nosuch in the cluster \(nodes: ma, mb, mc\)/],
        [['acme/web/i1', 'mc'], /node mc has no room for acme\/web\/i1: 0 of 64 MiB booked, it needs 128/],
        [['acme/web/nope', 'mb'], /no instance acme\/web\/nope on an alive node/],
        [
          ['acme/web/i2', 'mb'],
          /instance acme\/web\/i2 is Stopped: only a Running, Warm or Sleeping instance moves/,
        ],
        [['acme/web/i1', 'ma'], /instance acme\/web\/i1 is on node ma already/],
        [['acme/i1', 'mb'], /address "acme\/i1" must be <tenant>\/<pool>\/<instance>/],
      ];
      for (const [args, said] of refusals) {
        const refused = await move(...args);
        assert.equal(refused.code, 2, `${args.join(' ')}: ${refused.stderr}`);
        assert.match(refused.stderr, said);
      }
      assert.equal((await runCli(['cluster', '--etcd', etcd.endpoints, 'drain', 'mc', '--no-wait'])).code, 0);
      const drained = await move('acme/web/i1', 'mc');
      assert.match(drained.stderr, /node mc is drained: `vmkit cluster uncordon mc` first/);

      // ma's departures find no such instance (these members run none): the move fails, and says why.
      const departures = startDepartures({
        store,
        node: 'ma',
        server: {
          exclusive: (work: () => Promise<unknown>) => work(),
          fleet: { dir: join(dir, 'no-fleet'), store: { listInstances: () => [] } },
        } as unknown as AgentServer,
        tls: undefined,
        log: () => {},
      });
      try {
        const failed = await move('acme/web/i1', 'mb', '--timeout', '30');
        assert.equal(failed.code, 1, failed.stderr);
        assert.match(failed.stderr, /acme\/web\/i1 \(slot acme\/web\/running-0\) moves from ma to mb/);
        assert.match(
          failed.stderr,
          /acme\/web\/i1 did not move to mb: instance acme\/web\/i1 is not Running, Warm or Sleeping on node ma/,
        );
      } finally {
        await departures.stop();
      }
      // The failed record was read and removed; the slot stayed where it was.
      const after = await readCluster(store);
      assert.equal(after.moves.size, 0);
      assert.equal(after.slots.get('acme/web/running-0')?.value.node, 'ma');
      // Asked without waiting, the move is listed (under way) until it ends.
      const asked = await move('acme/web/i1', 'mb', '--no-wait');
      assert.equal(asked.code, 0, asked.stderr);
      const listed = await runCli(['cluster', '--etcd', etcd.endpoints, 'status']);
      assert.match(
        listed.stdout,
        /moves:\n {2}acme\/web\/running-0 \(acme\/web\/i1\) {2}ma -> mb {2}under way since /,
      );
      const twice = await move('acme/web/i1', 'mb');
      assert.equal(twice.code, 2);
      assert.match(
        twice.stderr,
        /no running slot of pool acme\/web on node ma is free to move \(a move of it may be under way\)/,
      );
    } finally {
      for (const member of members) await member.leave();
      store.close();
      await etcd.stop();
    }
  });
});

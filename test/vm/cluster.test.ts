// A fleet across hosts, all on this machine's loopback: a 3-member etcd cluster (Debian's
// etcd-server), 3 agents as CLI processes with their own fleet folders and ports, one CA. The
// document's instances spread over the nodes; a node killed with its VMMs has its instances
// started on the others; a node that comes back stops its copies first; placement goes on after
// the etcd leader and the scheduler's leader are killed.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { initCerts } from '../../src/fleet/agent/certs.js';
import { type ClusterStore, connectCluster } from '../../src/fleet/cluster/etcd.js';
import { type ClusterStatus, clusterStatus } from '../../src/fleet/cluster/status.js';
import { Fleet } from '../../src/fleet/fleet.js';
import { sleepStateId } from '../../src/fleet/snapshots/move-state.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { clusterRunDir, type EtcdCluster, exited, startClusterAgent, startEtcdCluster } from '../etcd.js';
import { cli, lacks, runCli } from '../helpers.js';

// Short: instance sockets live in the fleet folders and unix socket paths stop at 107 bytes.
/** Destroys the tenants of every node's fleet in `folder` (the VMMs' files, RAM files included). */
async function destroyFleets(folder: string): Promise<void> {
  for (const name of readdirSync(folder).filter((entry) => entry.startsWith('fleet-'))) {
    const fleet = new Fleet({ dir: join(folder, name) });
    for (const tenant of fleet.store.listTenants()) await fleet.destroyTenant(tenant.id).catch(() => {});
    await fleet.close();
  }
}
const dir = await clusterRunDir('vmkit-cl-', destroyFleets);
const certs = join(dir, 'certs');
const doc = join(dir, 'fleet.yaml');
const NODES = ['a', 'b', 'c'] as const;
type NodeName = (typeof NODES)[number];
const fleetDir = (node: NodeName) => join(dir, `fleet-${node}`);
/** What names a node's VMMs and switches on their command lines (not its agent's, nor other nodes'). */
const insideFleet = (node: NodeName) => `${fleetDir(node)}/`;

function writeDoc(web: number, jobs: number, debian = false): void {
  writeFileSync(
    doc,
    [
      'version: 1',
      'tenants:',
      '  - { id: acme, subnet: 10.91.0.0/24 }',
      '  - { id: globex, subnet: 10.92.0.0/24 }',
      'pools:',
      `  - { tenant: acme, id: web, memoryMiB: 128, desired: { running: ${web} } }`,
      `  - { tenant: globex, id: jobs, memoryMiB: 128, desired: { running: ${jobs} } }`,
      '  - { tenant: globex, id: nap, memoryMiB: 128, desired: { sleeping: 1 } }',
      ...(debian
        ? ['  - { tenant: globex, id: deb, image: debian, memoryMiB: 512, desired: { running: 1 } }']
        : []),
    ].join('\n'),
  );
}

/** The QEMU processes of a node's fleet folder. */
const vmmsOf = (node: NodeName) =>
  processesNaming(insideFleet(node)).filter((p) => p.program.includes('qemu-system'));

describe('a fleet across three hosts on etcd', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 900_000,
}, () => {
  let etcd: EtcdCluster;
  let store: ClusterStore;
  const agents = new Map<NodeName, { child: ChildProcess; log: () => string }>();

  const startAgentProcess = (node: NodeName) => {
    agents.set(
      node,
      startClusterAgent(cli, { fleetDir: fleetDir(node), endpoints: etcd.endpoints, node, certs }),
    );
  };

  const killAgent = async (node: NodeName, withVmms: boolean) => {
    const agent = agents.get(node);
    if (agent && agent.child.exitCode === null && agent.child.signalCode === null) {
      agent.child.kill('SIGKILL');
      await exited(agent.child, `the agent of node ${node}`);
    }
    if (withVmms) for (const leftover of processesNaming(insideFleet(node))) await stopDetached(leftover, 0);
  };

  /** Polls the cluster's status until `done` holds (within `timeoutMs`), naming `what` and the last status if not. */
  const waitForStatus = async (
    what: string,
    done: (status: ClusterStatus) => boolean,
    timeoutMs = 60_000,
  ) => {
    const until = Date.now() + timeoutMs;
    let last: ClusterStatus | string = 'none read';
    for (;;) {
      try {
        last = await clusterStatus(store);
        if (done(last)) return last;
      } catch (error) {
        last = (error as Error).message;
      }
      if (Date.now() > until) {
        const logs = [...agents].map(([node, agent]) => {
          const moves = agent
            .log()
            .split('\n')
            .filter((line) => /standby:|move:/.test(line))
            .slice(-12);
          return `--- agent ${node}:\n${agent.log().slice(-1500)}\n(its last lines on moves and copies:)\n${moves.join('\n')}`;
        });
        assert.fail(
          `${what}: not within ${timeoutMs} ms; last status:\n${JSON.stringify(last, null, 2)}\n${logs.join('\n')}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };

  const running = (status: ClusterStatus) => status.instances.filter((i) => i.state === 'Running');
  const vmmTotal = () => NODES.map((n) => vmmsOf(n).length).reduce((a, b) => a + b);
  /** A node with no slot and no lease is not in the status at all. */
  const slotsOn = (status: ClusterStatus, node: NodeName) =>
    status.nodes.find((n) => n.name === node)?.slots ?? 0;
  const alive = (status: ClusterStatus) => status.nodes.filter((n) => n.alive).map((n) => n.name);

  before(async () => {
    etcd = await startEtcdCluster(join(dir, 'etcd'));
    store = connectCluster(etcd.endpoints.split(','));
    await initCerts(certs, { ca: true });
    for (const node of NODES) startAgentProcess(node);
    await waitForStatus('three nodes registered', (s) => alive(s).length === 3, 30_000);
  });

  after(async () => {
    for (const node of NODES) await killAgent(node, false);
    await destroyFleets(dir);
    for (const leftover of processesNaming(dir)) await stopDetached(leftover, 0);
    store?.close();
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('apply places 6 instances over the 3 nodes; status shows nodes, instances, leader and revision', async () => {
    writeDoc(4, 2);
    const applied = await runCli(['cluster', '--etcd', etcd.endpoints, '--json', 'apply', doc]);
    assert.equal(applied.code, 0, applied.stderr);
    const { revision } = JSON.parse(applied.stdout) as { revision: string };
    const status = await waitForStatus('6 instances Running', (s) => running(s).length === 6);
    assert.equal(status.revision, revision);
    assert.ok(NODES.includes(status.leader as NodeName), `leader ${status.leader}`);
    for (const node of status.nodes) {
      assert.ok(node.alive && node.slots >= 1, `${node.name} got no slot: ${JSON.stringify(status.nodes)}`);
      assert.ok(node.capacity.memoryMiB > 0 && node.capacity.vcpus > 0);
    }
    // A Sleeping instance's slot books no memory.
    assert.equal(
      status.nodes.reduce((sum, node) => sum + node.bookedMiB, 0),
      6 * 128,
    );
    await waitForStatus('the Sleeping instance', (s) => s.instances.some((i) => i.state === 'Sleeping'));
    process.stderr.write(`# slots per node: ${status.nodes.map((n) => `${n.name} ${n.slots}`).join(', ')}\n`);
    // Every host's VMMs, listed by process: one per instance, none placed twice.
    assert.equal(
      NODES.map((n) => vmmsOf(n).length).reduce((a, b) => a + b),
      6,
    );
    for (const node of NODES)
      assert.equal(vmmsOf(node).length, running(status).filter((i) => i.node === node).length, node);
    const text = await runCli(['cluster', '--etcd', etcd.endpoints, 'status']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`document: revision ${revision}`));
    assert.match(text.stdout, /a {2}alive {2}\d slot\(s\), \d+\/\d+ MiB booked/);
  });

  /** Each instance's address, read from every node's fleet. */
  const addresses = async () => {
    const addressOf = new Map<string, string>();
    for (const node of NODES) {
      const fleet = new Fleet({ dir: fleetDir(node) });
      for (const i of fleet.store.listInstances()) addressOf.set(i.path, i.address.split('/')[0] as string);
      await fleet.close();
    }
    return addressOf;
  };
  const execOn = async (node: NodeName, path: string, script: string) => {
    const fleet = new Fleet({ dir: fleetDir(node) });
    try {
      return await fleet.exec(path, ['sh', '-c', script], 60_000);
    } finally {
      await fleet.close();
    }
  };
  /**
   * Pings from an acme instance to one on another node, tried for `withinMs` (a tunnel may still
   * be opening, or moving, right after a converge); fails with the last answer.
   */
  const pingAcrossNodes = async (status: ClusterStatus, withinMs: number) => {
    const addressOf = await addresses();
    const acme = running(status).filter((i) => i.path.startsWith('acme/'));
    const [from, to] = [acme[0], acme.find((i) => i.node !== acme[0]?.node)];
    assert.ok(from && to, `no two acme instances on different nodes: ${JSON.stringify(acme)}`);
    const target = addressOf.get(to.path) as string;
    const until = Date.now() + withinMs;
    const ping = () => execOn(from.node as NodeName, from.path, `ping -c 1 -W 2 ${target}`);
    let answer = await ping();
    while (answer.status !== 0 && Date.now() < until) answer = await ping();
    assert.equal(
      answer.status,
      0,
      `${from.path} on ${from.node} -> ${to.path} on ${to.node} (${target}): ${answer.stdout}${answer.stderr}`,
    );
    process.stderr.write(`# ${from.path} (${from.node}) pinged ${to.path} (${to.node}) at ${target}\n`);
    return { addressOf, target };
  };

  it("a tenant's instances on different nodes reach each other through the tunnel; another tenant's do not", async () => {
    const status = await clusterStatus(store);
    const { addressOf, target } = await pingAcrossNodes(status, 20_000);
    // Addresses come from each node's slice of the subnet: none is used twice in the cluster.
    assert.equal(new Set(addressOf.values()).size, addressOf.size, JSON.stringify([...addressOf]));
    const other = running(status).find((i) => i.path.startsWith('globex/')) as { path: string; node: string };
    const blocked = await execOn(other.node as NodeName, other.path, `ping -c 1 -W 2 ${target}`);
    assert.notEqual(blocked.status, 0, `globex reached acme's ${target}: ${blocked.stdout}`);
  });

  it('SIGTERM to an agent leaves its instances running; a restart within the TTL keeps its slots', async () => {
    const before = await clusterStatus(store);
    const node = NODES.find((n) => n !== before.leader) as NodeName;
    const slots = slotsOn(before, node);
    const vmms = vmmsOf(node).map((p) => p.pid);
    const agent = agents.get(node)?.child as ChildProcess;
    const stopping = agents.get(node)?.log ?? (() => '');
    const signalled = Date.now();
    agent.kill('SIGTERM');
    await exited(agent, `the agent of node ${node} after SIGTERM`).catch((error: Error) => {
      throw new Error(`${error.message}; its log:\n${stopping().slice(-3000)}`);
    });
    process.stderr.write(
      `# the agent of ${node} exited ${Date.now() - signalled} ms after SIGTERM; its last lines:\n# ${stopping().trim().split('\n').slice(-12).join('\n# ')}\n`,
    );
    assert.deepEqual(
      vmmsOf(node).map((p) => p.pid),
      vmms,
      'its VMMs run on',
    );
    startAgentProcess(node);
    const after = await waitForStatus(
      `node ${node} registered again`,
      (s) => (agents.get(node)?.log() ?? '').includes('registered under lease') && alive(s).includes(node),
    );
    process.stderr.write(`# node ${node} registered again ${Date.now() - signalled} ms after SIGTERM\n`);
    assert.equal(slotsOn(after, node), slots, agents.get(node)?.log().slice(-2500));
    assert.deepEqual(
      vmmsOf(node).map((p) => p.pid),
      vmms,
      'the same VMMs, none stopped or added',
    );
    assert.equal(running(after).length, 6);
  });

  it('a node killed with its VMMs: within 30 s its instances run on the others', async () => {
    const before = await clusterStatus(store);
    const victim = NODES.find((n) => n !== before.leader) as NodeName;
    // Its Sleeping instance, if it has one with a copy made already (a copy follows each sleep by
    // a second or two), arrives elsewhere from that copy: same path.
    const sleeping = before.instances.find((i) => i.node === victim && i.state === 'Sleeping')?.path;
    const copied = sleeping && (await store.kv.get(`standby/${sleeping}`).string());
    const asleep =
      copied && (JSON.parse(copied) as { owner: string }).owner === victim ? sleeping : undefined;
    const killedAt = Date.now();
    await killAgent(victim, true);
    try {
      const status = await waitForStatus(
        `node ${victim} dead and 6 instances Running on the others${asleep ? `, ${asleep} Sleeping there` : ''}`,
        (s) =>
          !alive(s).includes(victim) &&
          running(s).length === 6 &&
          slotsOn(s, victim) === 0 &&
          (!asleep || s.instances.some((i) => i.path === asleep && i.state === 'Sleeping')),
        45_000,
      );
      const tookMs = Date.now() - killedAt;
      assert.ok(tookMs < 30_000, `took ${tookMs} ms`);
      process.stderr.write(
        `# node ${victim}'s instances ran on the others ${tookMs} ms after the kill${asleep ? ` (${asleep} adopted)` : ''}\n`,
      );
      assert.ok(status.instances.every((i) => i.node !== victim));
      await waitForStatus('one VMM per Running instance, none placed twice', () => vmmTotal() === 6, 30_000);
    } finally {
      // It comes back empty (also after a failure: the tests after this one need three nodes).
      startAgentProcess(victim);
      await waitForStatus(`node ${victim} back`, (s) => alive(s).includes(victim));
    }
    assert.equal(vmmsOf(victim).length, 0);
  });

  it("a tenant's hub killed: its instances on the other nodes reach each other again", async () => {
    const before = await clusterStatus(store);
    // The hub is the first, by name, of the alive nodes holding the tenant's slots (tunnels.ts).
    const hub = [
      ...new Set(
        running(before)
          .filter((i) => i.path.startsWith('acme/'))
          .map((i) => i.node),
      ),
    ].sort()[0] as NodeName;
    await killAgent(hub, true);
    const status = await waitForStatus(
      `hub ${hub} dead and 6 instances Running on the others`,
      (s) => !alive(s).includes(hub) && running(s).length === 6 && slotsOn(s, hub) === 0,
      45_000,
    );
    await pingAcrossNodes(status, 30_000);
    startAgentProcess(hub);
    await waitForStatus(`node ${hub} back`, (s) => alive(s).includes(hub));
  });

  it('a node that comes back with instances placed elsewhere stops its copies before it registers', async () => {
    const before = await clusterStatus(store);
    const victim = NODES.find(
      (n) => n !== before.leader && running(before).some((i) => i.node === n),
    ) as NodeName;
    const copies = vmmsOf(victim).length;
    assert.ok(copies > 0);
    await killAgent(victim, false); // its VMMs run on
    await waitForStatus(
      `the slots of ${victim} placed elsewhere`,
      (s) => slotsOn(s, victim) === 0 && running(s).filter((i) => i.node !== victim).length === 6,
      45_000,
    );
    assert.equal(vmmsOf(victim).length, copies, 'the copies ran on while the agent was away');
    startAgentProcess(victim);
    // Its log line too: the status can show it registered before its stderr reached this process.
    await waitForStatus(
      `node ${victim} back`,
      (s) =>
        alive(s).includes(victim) && (agents.get(victim)?.log() ?? '').includes('registered under lease'),
    );
    const log = agents.get(victim)?.log() ?? '';
    const stopped = log.search(/reconcile: scale: (stop|destroy)/);
    const registered = log.indexOf('registered under lease');
    assert.ok(stopped >= 0 && stopped < registered, log);
    assert.equal(vmmsOf(victim).length, 0);
    assert.equal(
      NODES.map((n) => vmmsOf(n).length).reduce((a, b) => a + b),
      6,
    );
  });

  /** What a move must keep: a file in the guest's RAM (/run is tmpfs) and a process, by its pid. */
  const MARK = '/run/vmkit-moved-mark';
  const markGuest = async (node: NodeName, path: string) => {
    const token = `${path}-${Date.now()}`;
    const made = await execOn(node, path, `echo ${token} > ${MARK}; sleep 100000 >/dev/null 2>&1 & echo $!`);
    assert.equal(made.status, 0, made.stderr.toString());
    return { token, pid: made.stdout.toString().trim() };
  };
  const checkMark = async (node: NodeName, path: string, mark: { token: string; pid: string }) => {
    const seen = await execOn(node, path, `cat ${MARK}; kill -0 ${mark.pid} && echo alive; ip -4 -o addr`);
    const out = seen.stdout.toString();
    assert.equal(seen.status, 0, `${path} on ${node}: ${out}${seen.stderr.toString()}`);
    const [token, alive] = out.split('\n');
    assert.equal(token, mark.token, `${path} on ${node}: its file`);
    assert.equal(alive, 'alive', `${path} on ${node}: process ${mark.pid}`);
    // Its address is the one its new node gave it (from that node's slice), not the one it left with.
    const here = new Fleet({ dir: fleetDir(node) });
    const address = here.instance(path).address.split('/')[0] as string;
    await here.close();
    assert.match(out, new RegExp(`inet ${address.replaceAll('.', '\\.')}/`), out);
    return address;
  };
  const nodeOf = (status: ClusterStatus, path: string) => status.instances.find((i) => i.path === path)?.node;

  it('cluster move: a Running instance moves to another node with its file, its process and a new address', async () => {
    const before = await clusterStatus(store);
    const sleeper = before.instances.find((i) => i.state === 'Sleeping') as { path: string; node: NodeName };
    const runner = running(before).find((i) => i.path.startsWith('acme/') && i.node !== sleeper.node) as {
      path: string;
      node: NodeName;
    };
    assert.ok(sleeper && runner, JSON.stringify(before.instances));
    const mark = await markGuest(runner.node, runner.path);
    const leftWith = (await addresses()).get(runner.path);
    const moved = await runCli(
      ['cluster', '--etcd', etcd.endpoints, 'move', runner.path, sleeper.node, '--timeout', '120'],
      {},
      180_000,
    );
    assert.equal(
      moved.code,
      0,
      `${moved.stderr}\n${agents.get(runner.node)?.log().slice(-2000)}\n${agents.get(sleeper.node)?.log().slice(-2000)}`,
    );
    assert.match(
      moved.stdout,
      new RegExp(`${runner.path} moved from ${runner.node} to ${sleeper.node} with its state`),
    );
    const after = await waitForStatus(`${runner.path} Running on ${sleeper.node}`, (s) =>
      running(s).some((i) => i.path === runner.path && i.node === sleeper.node),
    );
    assert.equal(running(after).length, 6);
    const address = await checkMark(sleeper.node, runner.path, mark);
    process.stderr.write(`# ${runner.path}: ${runner.node} (${leftWith}) -> ${sleeper.node} (${address})\n`);
    assert.equal(vmmsOf(runner.node).length, running(after).filter((i) => i.node === runner.node).length);
    // Refused up front: an instance or a node the cluster does not know.
    const unknown = await runCli(['cluster', '--etcd', etcd.endpoints, 'move', runner.path, 'nosuch']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /no node nosuch in the cluster \(nodes: a, b, c\)/);
    const here = await runCli(['cluster', '--etcd', etcd.endpoints, 'move', runner.path, sleeper.node]);
    assert.equal(here.code, 2);
    assert.match(here.stderr, new RegExp(`is on node ${sleeper.node} already`));
  });

  it("drain: a node's Running and Sleeping instances move with their state, its VMMs end, and uncordon makes it usable again", async () => {
    const before = await waitForStatus('a Sleeping instance', (s) =>
      s.instances.some((i) => i.state === 'Sleeping'),
    );
    const sleeper = before.instances.find((i) => i.state === 'Sleeping') as { path: string; node: NodeName };
    const node = sleeper.node;
    const runners = running(before).filter((i) => i.node === node);
    assert.ok(runners.length > 0, JSON.stringify(before.instances));
    const marks = new Map<string, { token: string; pid: string }>();
    for (const runner of runners) marks.set(runner.path, await markGuest(node, runner.path));
    // The Sleeping one is woken here to be marked, then slept again (the agent reconciles only on changes).
    const local = new Fleet({ dir: fleetDir(node) });
    try {
      await local.wake(sleeper.path);
      marks.set(sleeper.path, await markGuest(node, sleeper.path));
      await local.sleep(sleeper.path);
    } finally {
      await local.close();
    }
    const drained = await runCli(
      ['cluster', '--etcd', etcd.endpoints, 'drain', node, '--timeout', '180'],
      {},
      240_000,
    );
    assert.equal(drained.code, 0, `${drained.stderr}\n${agents.get(node)?.log().slice(-3000)}`);
    const after = await waitForStatus(
      '6 instances Running and one Sleeping off the drained node',
      (s) =>
        running(s).length === 6 &&
        s.instances.some((i) => i.path === sleeper.path && i.state === 'Sleeping' && i.node !== node),
    );
    // Nothing holds state there any more (copies Stopped by earlier tests keep only their disks).
    const left = after.instances.filter((i) => i.node === node);
    assert.ok(
      left.every((i) => i.state === 'Stopped' && !marks.has(i.path)),
      JSON.stringify(left),
    );
    const log = agents.get(node)?.log() ?? '';
    for (const runner of runners) {
      const now = nodeOf(after, runner.path) as NodeName;
      assert.ok(now && now !== node, `${runner.path} is on ${now}`);
      assert.match(log, new RegExp(`move: ${runner.path} \\(\\S+\\) moved to ${now} with its state`));
      await checkMark(now, runner.path, marks.get(runner.path) as { token: string; pid: string });
    }
    // The Sleeping one arrived Sleeping; woken where it went, it has its file and its process.
    const napNode = nodeOf(after, sleeper.path) as NodeName;
    const there = new Fleet({ dir: fleetDir(napNode) });
    try {
      await there.wake(sleeper.path);
      await checkMark(napNode, sleeper.path, marks.get(sleeper.path) as { token: string; pid: string });
      await there.sleep(sleeper.path);
    } finally {
      await there.close();
    }
    process.stderr.write(
      `# drained ${node}: ${[...marks.keys()].map((p) => `${p} -> ${nodeOf(after, p)}`).join(', ')}\n`,
    );
    assert.equal(vmmsOf(node).length, 0, 'the drained node runs no VMM');
    assert.ok(after.nodes.find((n) => n.name === node)?.drainedSince);
    assert.deepEqual(after.moves, []);
    const uncordon = await runCli(['cluster', '--etcd', etcd.endpoints, 'uncordon', node]);
    assert.equal(uncordon.code, 0, uncordon.stderr);
    assert.equal((await clusterStatus(store)).nodes.find((n) => n.name === node)?.drainedSince, null);
  });

  it('a node killed with its VMMs: its Sleeping instance wakes on another node with its state, from the standby copy', async () => {
    // The test before slept it again last: its node reports that within a few seconds.
    const before = await waitForStatus('a Sleeping instance', (s) =>
      s.instances.some((i) => i.state === 'Sleeping'),
    );
    const sleeper = before.instances.find((i) => i.state === 'Sleeping') as { path: string; node: NodeName };
    const node = sleeper.node;
    // Marked (woken, then slept again): the node keeps a copy of the new sleep on another node.
    const local = new Fleet({ dir: fleetDir(node) });
    let mark: { token: string; pid: string };
    let sleepId: string | undefined;
    try {
      await local.wake(sleeper.path);
      mark = await markGuest(node, sleeper.path);
      sleepId = sleepStateId(fleetDir(node), await local.sleep(sleeper.path));
    } finally {
      await local.close();
    }
    // A copy of this sleep (one of the sleep before may be recorded just after it).
    const until = Date.now() + 60_000;
    let copy: { owner: string; holder: string; sleepId: string } | undefined;
    while (!copy || copy.owner !== node || copy.sleepId !== sleepId) {
      assert.ok(
        Date.now() < until,
        `no standby copy of ${sleeper.path}'s new sleep: ${JSON.stringify(copy)}`,
      );
      await new Promise((resolve) => setTimeout(resolve, 500));
      const text = await store.kv.get(`standby/${sleeper.path}`).string();
      copy = text ? JSON.parse(text) : undefined;
    }
    process.stderr.write(`# ${sleeper.path} sleeps on ${node}, its copy on ${copy.holder}\n`);
    await killAgent(node, true);
    try {
      const after = await waitForStatus(
        `node ${node} dead and ${sleeper.path} Sleeping on another node`,
        (s) =>
          !alive(s).includes(node) &&
          running(s).length === 6 &&
          s.instances.some((i) => i.path === sleeper.path && i.state === 'Sleeping' && i.node !== node),
        60_000,
      );
      const napNode = nodeOf(after, sleeper.path) as NodeName;
      assert.match(
        agents.get(napNode)?.log() ?? '',
        new RegExp(`standby: ${sleeper.path} of dead node ${node} adopted from ${copy.holder}'s copy`),
      );
      const there = new Fleet({ dir: fleetDir(napNode) });
      try {
        await there.wake(sleeper.path);
        await checkMark(napNode, sleeper.path, mark);
        await there.sleep(sleeper.path);
      } finally {
        await there.close();
      }
    } finally {
      // Back, also after a failure: the tests after this one need three nodes.
      startAgentProcess(node);
      await waitForStatus(`node ${node} back`, (s) => alive(s).includes(node));
    }
    assert.equal(vmmsOf(node).length, 0);
  });

  it('a move whose target stops answering fails with the reason; the instance runs on where it was', async () => {
    const before = await clusterStatus(store);
    const runner = running(before).find((i) => i.path.startsWith('acme/')) as {
      path: string;
      node: NodeName;
    };
    const target = NODES.find((n) => n !== runner.node && n !== before.leader) as NodeName;
    const mark = await markGuest(runner.node, runner.path);
    const stopped = agents.get(target)?.child as ChildProcess;
    stopped.kill('SIGSTOP'); // its lease lapses: dead to the cluster, as a host that hangs
    let moved: Awaited<ReturnType<typeof runCli>>;
    try {
      moved = await runCli(
        ['cluster', '--etcd', etcd.endpoints, 'move', runner.path, target, '--timeout', '120'],
        {},
        180_000,
      );
    } finally {
      stopped.kill('SIGCONT');
    }
    const logs = () =>
      `${moved.stderr}\n--- ${runner.node}:\n${agents.get(runner.node)?.log().slice(-3000)}\n--- ${target}:\n${agents.get(target)?.log().slice(-1500)}`;
    assert.equal(moved.code, 1, logs());
    assert.match(
      moved.stderr,
      new RegExp(`${runner.path} did not move to ${target}: .*node ${target} died during the move`),
      logs(),
    );
    // Slept for the move, woken again where it was: the same guest, its file and process there.
    await checkMark(runner.node, runner.path, mark);
    await waitForStatus(
      `node ${target} back, 6 instances Running`,
      (s) =>
        alive(s).includes(target) &&
        running(s).length === 6 &&
        s.moves.length === 0 &&
        NODES.map((n) => vmmsOf(n).length).reduce((a, b) => a + b) === 6,
      90_000,
    );
  });

  it('with the etcd leader and then the scheduler killed, a changed document is still placed', async () => {
    const etcdLeader = await etcd.leader();
    await etcd.kill(etcdLeader);
    const before = await waitForStatus('status after the etcd leader died', (s) => s.leader !== null);
    const schedulerNode = before.leader as NodeName;
    await killAgent(schedulerNode, true);
    writeDoc(5, 2);
    const applied = await runCli(['cluster', '--etcd', etcd.endpoints, 'apply', doc]);
    assert.equal(applied.code, 0, applied.stderr);
    const status = await waitForStatus(
      '7 instances Running on the two nodes left, under a new scheduler',
      (s) =>
        s.leader !== null &&
        s.leader !== schedulerNode &&
        running(s).length === 7 &&
        s.instances.every((i) => i.node !== schedulerNode),
      90_000,
    );
    assert.ok(!alive(status).includes(schedulerNode));
    assert.equal(
      NODES.map((n) => vmmsOf(n).length).reduce((a, b) => a + b),
      7,
    );
  });

  it('a Debian instance moves with its state: its root disk goes flattened, its files and processes kept', async () => {
    writeDoc(5, 2, true);
    const applied = await runCli(['cluster', '--etcd', etcd.endpoints, 'apply', doc]);
    assert.equal(applied.code, 0, applied.stderr);
    const status = await waitForStatus(
      'the Debian instance Running',
      (s) => running(s).some((i) => i.path.startsWith('globex/deb/')),
      300_000,
    );
    const deb = running(status).find((i) => i.path.startsWith('globex/deb/')) as {
      path: string;
      node: NodeName;
    };
    const target = alive(status).find((n) => n !== deb.node) as NodeName;
    const mark = await markGuest(deb.node, deb.path);
    const onDisk = await execOn(deb.node, deb.path, `echo ${mark.token} > /root/moved-mark && sync`);
    assert.equal(onDisk.status, 0, onDisk.stderr.toString());
    const moved = await runCli(
      ['cluster', '--etcd', etcd.endpoints, 'move', deb.path, target, '--timeout', '300'],
      {},
      360_000,
    );
    assert.equal(
      moved.code,
      0,
      `${moved.stderr}\n${agents.get(deb.node)?.log().slice(-2000)}\n${agents.get(target)?.log().slice(-2000)}`,
    );
    await checkMark(target, deb.path, mark);
    const root = await execOn(target, deb.path, 'cat /root/moved-mark');
    assert.equal(root.stdout.toString().trim(), mark.token, 'the file on its root disk');
    process.stderr.write(`# ${deb.path}: ${deb.node} -> ${target}, root disk and RAM with it\n`);
  });
});

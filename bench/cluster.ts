// A fleet across hosts, on this machine: N tiny instances reconciled by one agent from a file,
// against the same N placed by the cluster over 3 agents (3-member etcd on loopback, agents as CLI
// processes), side by side in one run; a drain's time per instance (each moved with its state);
// then the failover: a node's agent and VMMs killed, until its instances run on the others,
// against the node lease's TTL; and the tunnel's TCP throughput
// between two nodes against two instances on one node (bench/cluster-tunnel.ts). Prints one JSON
// object.
//
//   node --import tsx bench/cluster.ts [--instances N] [--mib M] [--samples S]

import { type ChildProcess, spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { applyClusterDocument, clusterStatus, connectCluster, Fleet, initCerts, loadDesired } from 'vmkit';
import { drainNode, uncordonNode } from '../src/fleet/cluster/drain.js';
import { processesNaming, stopDetached } from '../src/runtime/detached.js';
import { clusterRunDir, type EtcdCluster, startEtcdCluster } from '../test/etcd.js';
import { tunnelThroughput } from './cluster-tunnel.js';
import { loadAverages, log, median, parseIntOptions, ratio, round, runBenchmark } from './lib.js';

const USAGE = `usage: node --import tsx bench/cluster.ts [--instances N] [--mib M] [--samples S]
N tiny instances (default 12) by one agent against the cluster over 3 agents; TCP throughput
through the tunnel between two nodes against within one node (M MiB per sample, default 8; S
samples each, alternated, default 3); a drain's time per instance; and a node's failover.
`;
const TTL_SECONDS = 10;
const NODES = ['a', 'b', 'c'];
const cli = new URL('../dist/cli/main.js', import.meta.url).pathname;

const options = parseIntOptions(USAGE, {
  instances: { default: 12, min: 3 },
  mib: { default: 8, min: 1 },
  samples: { default: 3, min: 1 },
});
if (options) {
  const dir = await clusterRunDir('vmkit-cb-');
  const certs = join(dir, 'certs');
  const file = join(dir, 'fleet.json');
  const fleetDir = (node: string) => join(dir, `fleet-${node}`);
  const agents = new Map<string, ChildProcess>();
  let etcd: EtcdCluster | undefined;
  const document = {
    version: 1,
    tenants: [
      {
        id: 'bench',
        subnet: '10.97.0.0/24',
        quotas: { maxRunning: 64, maxInstances: 64, maxMemoryMiB: 65_536, maxVcpus: 64 },
      },
    ],
    pools: [{ tenant: 'bench', id: 'web', memoryMiB: 128, desired: { running: options.instances } }],
  };

  await runBenchmark(
    async () => {
      writeFileSync(file, JSON.stringify(document));
      // One host: the same document reconciled in process (its base from the boot cache, as the
      // cluster's nodes will have it too once the first made it).
      const single = new Fleet({ dir: fleetDir('single'), log });
      let began = performance.now();
      const report = await single.reconcile(loadDesired(file));
      const oneAgentMs = round(performance.now() - began);
      if (report.failed) throw new Error(`the one-host reconcile failed: ${JSON.stringify(report.phases)}`);
      for (const tenant of single.store.listTenants()) await single.destroyTenant(tenant.id);
      await single.close();
      log(`one agent: ${options.instances} instances in ${oneAgentMs} ms`);

      etcd = await startEtcdCluster(join(dir, 'etcd'));
      const store = connectCluster(etcd.endpoints.split(','));
      await initCerts(certs, { ca: true });
      for (const node of NODES) {
        const args = ['fleet', '--fleet-dir', fleetDir(node), 'agent', 'serve', '--etcd', etcd.endpoints];
        args.push('--node', node, '--certs', certs, '--listen', '127.0.0.1:0', '--interval', '3600');
        agents.set(node, spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'ignore', 'inherit'] }));
      }
      const waitFor = async (
        what: string,
        done: (s: Awaited<ReturnType<typeof clusterStatus>>) => boolean,
      ) => {
        const until = Date.now() + 180_000;
        for (;;) {
          const status = await clusterStatus(store).catch(() => undefined);
          if (status && done(status)) return status;
          if (Date.now() > until) throw new Error(`${what}: not within 180 s: ${JSON.stringify(status)}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      };
      const running = (s: Awaited<ReturnType<typeof clusterStatus>>) =>
        s.instances.filter((i) => i.state === 'Running');
      await waitFor('3 nodes', (s) => s.nodes.filter((n) => n.alive).length === 3);
      began = performance.now();
      await applyClusterDocument(store, loadDesired(file));
      const placed = await waitFor('all Running', (s) => running(s).length === options.instances);
      const clusterMs = round(performance.now() - began);
      const spread = Object.fromEntries(placed.nodes.map((n) => [n.name, n.slots]));
      log(`cluster: ${options.instances} instances in ${clusterMs} ms, spread ${JSON.stringify(spread)}`);

      const addressOf = new Map<string, string>();
      for (const node of NODES) {
        const fleet = new Fleet({ dir: fleetDir(node) });
        for (const i of fleet.store.listInstances()) addressOf.set(i.path, i.address.split('/')[0] as string);
        await fleet.close();
      }
      const tunnel = await tunnelThroughput(
        running(placed),
        (path) => addressOf.get(path) as string,
        fleetDir,
        options,
      );
      const medianRate = (samples: Array<{ mbitPerSecond: number }>) =>
        median(samples.map((sample) => sample.mbitPerSecond));
      const throughput = tunnel && {
        ...tunnel,
        acrossNodesMedianMbit: medianRate(tunnel.acrossNodes.samples),
        oneNodeMedianMbit: medianRate(tunnel.oneNode.samples),
        acrossOverOneNode: ratio(medianRate(tunnel.acrossNodes.samples), medianRate(tunnel.oneNode.samples)),
      };
      if (throughput)
        log(
          `throughput: across nodes ${throughput.acrossNodesMedianMbit} Mbit/s, one node ${throughput.oneNodeMedianMbit} Mbit/s`,
        );

      // A drain: each instance of one node slept, shipped and woken on the others, one after another.
      const drained = NODES.find(
        (n) => n !== placed.leader && running(placed).some((i) => i.node === n),
      ) as string;
      const leaving = running(placed)
        .filter((i) => i.node === drained)
        .map((i) => i.path);
      began = performance.now();
      await drainNode(store, drained);
      const afterDrain = await waitFor(
        `the instances of ${drained} elsewhere`,
        (s) =>
          running(s).length === options.instances &&
          running(s).every((i) => i.node !== drained) &&
          s.moves.length === 0,
      );
      const drainMs = round(performance.now() - began);
      // Moved with their state, they keep their paths (an instance started cold gets a new id).
      const kept = leaving.filter((path) => running(afterDrain).some((i) => i.path === path)).length;
      log(`drain of node ${drained}: ${leaving.length} instances in ${drainMs} ms, ${kept} with their state`);
      await uncordonNode(store, drained);

      const victim = NODES.find(
        (n) => n !== afterDrain.leader && running(afterDrain).some((i) => i.node === n),
      ) as string;
      const victimAgent = agents.get(victim) as ChildProcess;
      began = performance.now();
      victimAgent.kill('SIGKILL');
      for (const leftover of processesNaming(`${fleetDir(victim)}/`)) await stopDetached(leftover, 0);
      await waitFor(
        `the instances of ${victim} elsewhere`,
        (s) => running(s).length === options.instances && running(s).every((i) => i.node !== victim),
      );
      const failoverMs = round(performance.now() - began);
      log(`failover of node ${victim}: ${failoverMs} ms (lease TTL ${TTL_SECONDS} s)`);
      store.close();
      process.stdout.write(
        `${JSON.stringify(
          {
            benchmark: 'cluster',
            instances: options.instances,
            oneAgentReconcileMs: oneAgentMs,
            clusterApplyToRunningMs: clusterMs,
            clusterOverOneAgent: ratio(clusterMs, oneAgentMs),
            spread,
            tunnelThroughput: throughput ?? 'no pair of instances across nodes and on one node',
            drain: {
              node: drained,
              instances: leaving.length,
              movedWithState: kept,
              totalMs: drainMs,
              perInstanceMs: round(drainMs / Math.max(1, leaving.length)),
            },
            failover: {
              killedNode: victim,
              instancesMoved: running(afterDrain).filter((i) => i.node === victim).length,
              toRunningElsewhereMs: failoverMs,
              leaseTtlMs: TTL_SECONDS * 1000,
              overLeaseTtl: ratio(failoverMs, TTL_SECONDS * 1000),
            },
            note: 'one host: the three agents and etcd share its 2 cores; the cluster starts instances on three nodes at once, the one agent one after another',
            loadAverages: loadAverages(),
          },
          null,
          2,
        )}\n`,
      );
    },
    async () => {
      for (const agent of agents.values()) agent.kill('SIGKILL');
      for (const node of NODES) {
        const fleet = new Fleet({ dir: fleetDir(node) });
        for (const tenant of fleet.store.listTenants()) await fleet.destroyTenant(tenant.id).catch(() => {});
        await fleet.close();
      }
      for (const leftover of processesNaming(dir)) await stopDetached(leftover, 0);
      await etcd?.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  );
}

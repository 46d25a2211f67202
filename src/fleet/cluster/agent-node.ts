import { cpus, totalmem } from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { AgentServer, Exclusive } from '../agent/server.js';
import type { Fleet } from '../fleet.js';
import { clusterAgentId } from '../state/cluster-slice.js';
import { type MoveRoutesOptions, moveRoutes } from './arrivals.js';
import { dropCopiesHeldElsewhere } from './copies.js';
import { type Departures, startDepartures } from './departures.js';
import { type ClusterStore, checkNodeName, clusterCall, type NodeRecord } from './etcd.js';
import { type FailingPool, trackFailures } from './failing.js';
import { watchEventLoop } from './loop-watch.js';
import { type ClusterMember, joinCluster, readShare } from './member.js';
import { refuseIfNameHeld } from './membership.js';
import { adoptStandbys } from './standby.js';
import { standbyRoutes } from './standby-holder.js';
import { readCluster } from './state.js';
import type { TunnelTls } from './tunnel.js';
import { TunnelSet } from './tunnels.js';

export interface ClusterAgentOptions {
  store: ClusterStore;
  node: string;
  /** The agent's URL as other hosts reach it (default: the URL it listens on). */
  advertise?: string;
  /** The memory the scheduler may book on this node (default: the host's). */
  memoryMiB?: number;
  ttlSeconds?: number;
  placementK?: number;
  /** The agent's CA and client certificate: with them, the node's tenant switches join the other nodes' (tunnel.ts). */
  tunnels?: TunnelTls;
  log?: (line: string) => void;
}

/** What the node reports: capacity, what its instances use, and each instance's state. */
function nodeRecord(
  fleet: Fleet,
  options: ClusterAgentOptions,
  advertise: string,
  startedAt: string,
  agentId: string,
  failing: FailingPool[],
): NodeRecord {
  const instances = fleet.store.listInstances();
  const holding = instances.filter((i) => i.state === 'Running' || i.state === 'Warm');
  const memoryOf = (tenant: string, pool: string) => fleet.store.findPool(tenant, pool)?.memoryMiB ?? 0;
  return {
    name: options.node,
    agentId,
    advertise,
    capacity: {
      memoryMiB: options.memoryMiB ?? Math.round(totalmem() / 2 ** 20),
      vcpus: cpus().length,
    },
    use: {
      memoryMiB: holding.reduce((sum, i) => sum + memoryOf(i.tenant, i.pool), 0),
      running: instances.filter((i) => i.state === 'Running').length,
      instances: instances.length,
    },
    instances: instances.map((i) => ({ path: i.path, state: i.state })),
    ...(failing.length > 0 ? { failing } : {}),
    startedAt,
    reportedAt: new Date().toISOString(),
  };
}

/** The routes of a cluster node's agent (startAgent's `routes`): moves with state and standby copies. */
export function clusterRoutes(options: MoveRoutesOptions) {
  return (app: FastifyInstance, fleet: Fleet, exclusive: Exclusive) => {
    moveRoutes(options)(app, fleet, exclusive);
    standbyRoutes(options)(app);
  };
}

/**
 * The `desiredSource` of a cluster node's agent (`startAgent({ desiredSource })`): its share of the
 * cluster's document, reconciled with prune (the cluster's document is the whole truth for the
 * node); undefined before any document is applied.
 */
export function clusterShareSource(store: ClusterStore, node: string) {
  return async () => {
    const share = await clusterCall(store, `reading the share of node ${node}`, () => readShare(store, node));
    return share && { ...share, prune: true };
  };
}

/**
 * Makes a started agent (whose desiredSource is clusterShareSource) a member of the
 * cluster: it converges to its share, registers, campaigns for the scheduler, and converges on
 * every change of the document or of the slots.
 */
export async function joinAsAgent(server: AgentServer, options: ClusterAgentOptions): Promise<ClusterMember> {
  checkNodeName(options.node);
  const log = options.log ?? (() => {});
  const startedAt = new Date().toISOString();
  const advertise = options.advertise ?? server.url;
  const agentId = clusterAgentId(server.fleet.dir);
  // Before the first converge: another agent's share must not be started here too.
  const resumes = (await refuseIfNameHeld(options.store, options.node, agentId)) !== undefined;
  const unwatch = watchEventLoop(log, ((options.ttlSeconds ?? 10) * 1000) / 5);
  let failing: FailingPool[] = [];
  const tunnels = options.tunnels && new TunnelSet(options.node, server.fleet.dir, options.tunnels, log);
  let departures: Departures | undefined;
  const moving = { store: options.store, node: options.node, server, tls: options.tunnels, log };
  const member = await joinCluster({
    store: options.store,
    node: options.node,
    record: () => nodeRecord(server.fleet, options, advertise, startedAt, agentId, failing),
    resumes,
    converge: async () => {
      // Before the reconcile: a dead node's Sleeping instance placed here arrives with its state.
      await server
        .exclusive(() => adoptStandbys(moving))
        .catch((error: Error) => log(`standby: adopting: ${error.message}`));
      const report = await server.reconcileNow();
      // After it (one read for the copies and the tunnels): the copies it stopped of instances that
      // now live on another node go.
      const after = await readCluster(options.store);
      await server
        .exclusive(async () => dropCopiesHeldElsewhere(server.fleet, after, options.node, log))
        .catch((error: Error) => log(`cluster: removing copies: ${error.message}`));
      departures?.poke(); // the instances it put to sleep get their standby copies now, not at the next round
      if (report.changed > 0 || report.failed > 0)
        log(
          `cluster: converged to ${report.document}: ${report.changed} change(s), ${report.failed} failure(s)`,
        );
      failing = trackFailures(failing, report);
      for (const pool of failing)
        log(`cluster: pool ${pool.pool} failed ${pool.converges} converge(s) in a row here: ${pool.error}`);
      tunnels?.update(after);
      return report.failed > 0;
    },
    onMoves: () => departures?.poke(),
    ...(options.ttlSeconds ? { ttlSeconds: options.ttlSeconds } : {}),
    ...(options.placementK ? { placementK: options.placementK } : {}),
    log,
  }).catch((error) => {
    unwatch();
    tunnels?.closeAll();
    throw error;
  });
  departures = startDepartures({
    store: options.store,
    node: options.node,
    server,
    tls: options.tunnels,
    log,
  });
  return {
    scheduler: member.scheduler,
    registered: member.registered,
    async leave(beforeLapse) {
      tunnels?.closeAll();
      await departures?.stop();
      await member.leave(beforeLapse);
      unwatch();
    },
  };
}

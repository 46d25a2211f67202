import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ClusterError } from '../../errors.js';
import { ensureDirSync } from '../../util/files.js';
import { sleepStateId } from '../snapshots/move-state.js';
import { holdsState } from '../state/lifecycle.js';
import type { Instance } from '../state/model.js';
import { departureDir } from './arrivals.js';
import { clearStaleCopy } from './copies.js';
import { clusterCall, KEYS, nodeGone, type StandbyRecord } from './etcd.js';
import type { MoveContext } from './move-context.js';
import { downloadChecked, peerPost } from './peer.js';
import { parseSlotId } from './slots.js';
import { removeUnclaimedStandbys } from './standby-holder.js';
import { type ClusterState, readCluster } from './state.js';

/**
 * Standby copies: each Sleeping instance of a node has a copy of its sleep state on another node
 * (the next alive one by name), recorded in etcd (`standby/<path>`) and made again after each new
 * sleep. When the node dies, the node its slot goes to adopts the copy from the holder: the
 * instance arrives Sleeping there, with its files and processes, instead of starting cold.
 */

/** The alive node after `node` by name (round the ring), not drained: where its copies go. */
function holderFor(state: ClusterState, node: string): string | undefined {
  const others = [...state.nodes.keys()].filter((n) => n !== node && !state.drained.has(n)).sort();
  return others.find((n) => n > node) ?? others[0];
}

/**
 * Brings this node's standby copies up to date: one for each Sleeping instance of its own, made
 * again after a new sleep or when its holder died; records of instances no longer asleep here
 * removed; and the copies it holds for others that no record names any more.
 */
export async function syncStandbys(
  options: MoveContext,
  /** The failures said so far, by instance: one that keeps failing is said again once a minute. */
  failures: Map<string, { message: string; at: number }> = new Map(),
): Promise<void> {
  const { store, node, server, log } = options;
  const { fleet } = server;
  const state = await clusterCall(store, 'reading the standby copies', () => readCluster(store));
  removeUnclaimedStandbys(fleet.dir, node, state);
  const sleeping = fleet.store.listInstances().filter((i) => i.state === 'Sleeping' && !i.intent);
  for (const [path, record] of state.standbys) {
    if (record.value.owner !== node || sleeping.some((i) => i.path === path)) continue;
    await store.kv
      .if(KEYS.standby(path), 'Mod', '==', record.modRevision)
      .then(store.kv.delete().key(KEYS.standby(path)))
      .commit();
  }
  if (!options.tls) return;
  for (const instance of sleeping) {
    const sleepId = sleepStateId(fleet.dir, instance);
    const record = state.standbys.get(instance.path)?.value;
    if (!sleepId) continue;
    if (record?.owner === node && record.sleepId === sleepId && state.nodes.has(record.holder)) continue;
    const holder = holderFor(state, node);
    const to = holder && state.nodes.get(holder);
    if (!to) return; // no other node: nowhere to keep a copy
    await server
      .exclusive(() => pushCopy(options, instance, to.value.name, to.value.advertise, sleepId))
      .then(
        () => failures.delete(instance.path),
        (error: Error) => {
          const message = `standby: no copy of ${instance.path} on ${holder}: ${error.message}`;
          const said = failures.get(instance.path);
          if (said?.message === message && Date.now() - said.at < 60_000) return;
          failures.set(instance.path, { message, at: Date.now() });
          log(`${message}; trying again every 10 s`);
        },
      );
  }
  for (const path of failures.keys()) if (!sleeping.some((i) => i.path === path)) failures.delete(path);
}

async function pushCopy(
  options: MoveContext,
  instance: Instance,
  holder: string,
  url: string,
  sleepId: string,
): Promise<void> {
  const { fleet } = options.server;
  const stillThatSleep = () => {
    const now = fleet.store
      .listInstances({ tenant: instance.tenant, pool: instance.pool })
      .find((i) => i.id === instance.id);
    return now?.state === 'Sleeping' && sleepStateId(fleet.dir, now) === sleepId;
  };
  if (!stillThatSleep()) return; // woke meanwhile
  const id = randomBytes(8).toString('hex');
  const out = departureDir(fleet.dir, id);
  try {
    const files = await fleet.packForMove(instance.path, out);
    await peerPost(
      url,
      '/v1/cluster/standbys',
      { path: instance.path, departure: id, owner: options.node, files },
      options.tls as NonNullable<MoveContext['tls']>,
      300_000,
      // A holder that hangs would hold this node's converges and moves up to the timeout.
      nodeGone(options.store, holder, 'while it took the copy'),
    );
    const record: StandbyRecord = {
      owner: options.node,
      holder,
      sleepId,
      address: instance.address,
      files,
      at: new Date().toISOString(),
    };
    // Recorded only if the instance still sleeps that sleep: a copy of an older one is no copy.
    if (!stillThatSleep()) return;
    await options.store.kv.put(KEYS.standby(instance.path)).value(JSON.stringify(record)).exec();
    options.log(`standby: a copy of ${instance.path}'s sleep state is kept on ${holder}`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/**
 * Adopts the standby copies of dead nodes' instances, as many per pool as this node's share of
 * it lacks instances: each claimed in etcd (one node adopts it), downloaded from its holder and
 * made a Sleeping instance here, with the same path. The converge that follows counts it.
 */
export async function adoptStandbys(options: MoveContext): Promise<void> {
  const { store, node, server, log } = options;
  const { fleet } = server;
  const state = await clusterCall(store, 'reading the standby copies', () => readCluster(store));
  if (!options.tls || state.standbys.size === 0) return;
  const slots = new Map<string, number>();
  for (const [id, placed] of state.slots) {
    const pool = parseSlotId(id)?.pool;
    if (pool && placed.value.node === node) slots.set(pool, (slots.get(pool) ?? 0) + 1);
  }
  for (const [pool, count] of slots) {
    const [tenant = '', poolId = ''] = pool.split('/');
    if (!fleet.store.findPool(tenant, poolId)) continue; // made by the converge that follows; adopted by the next
    const here = fleet.store.listInstances({ tenant, pool: poolId });
    // A Stopped or Ready one would start cold: the copy, with its state, comes first.
    let lacking = count - here.filter((i) => holdsState(i.state)).length;
    for (const [path, record] of state.standbys) {
      if (lacking <= 0) break;
      const { owner, holder } = record.value;
      if (
        !path.startsWith(`${pool}/`) ||
        state.nodes.has(owner) ||
        here.some((i) => i.path === path && holdsState(i.state))
      )
        continue;
      const from = state.nodes.get(holder);
      if (!from) continue;
      const claimed = await store.kv
        .if(KEYS.standby(path), 'Mod', '==', record.modRevision)
        .then(store.kv.delete().key(KEYS.standby(path)))
        .commit();
      if (!claimed.succeeded) continue;
      lacking -= 1;
      await adoptOne(options, path, record.value, from.value.advertise).then(
        () => log(`standby: ${path} of dead node ${owner} adopted from ${holder}'s copy: it sleeps here`),
        (error: Error) =>
          log(
            `standby: ${path} of dead node ${owner} could not be adopted (${error.message}): it starts cold`,
          ),
      );
    }
  }
}

async function adoptOne(
  options: MoveContext,
  path: string,
  record: StandbyRecord,
  url: string,
): Promise<void> {
  const { fleet } = options.server;
  const [tenant, pool, id] = path.split('/') as [string, string, string];
  const inDir = join(fleet.dir, 'moves', 'in', randomBytes(8).toString('hex'));
  ensureDirSync(inDir, 0o700);
  try {
    const copies = (name: string) => `/v1/cluster/standbys/${path}/${name}`;
    await downloadChecked(url, copies, record.files, inDir, options.tls as NonNullable<MoveContext['tls']>);
    await clearStaleCopy(fleet, path, options.log);
    const arrived = await fleet.arrive(`${tenant}/${pool}`, id, inDir, record.address);
    if (arrived.state !== 'Sleeping')
      throw new ClusterError(`${path} is ${arrived.state} after its adoption`);
  } finally {
    rmSync(inDir, { recursive: true, force: true });
  }
}

/** How long a dead node's copy waits for a node to adopt it once none of its slots is left on it. */
const ORPHAN_GRACE_MS = 60_000;

/**
 * Removes the standby records of dead nodes that no node adopted (their slots went elsewhere as
 * other kinds, or started cold): once the dead node holds no slot, after a grace. `seen` keeps
 * when each was first found so (the scheduler's, across its rounds).
 */
export async function removeOrphanedStandbys(
  store: MoveContext['store'],
  state: ClusterState,
  seen: Map<string, number>,
): Promise<void> {
  const holding = new Set([...state.slots.values()].map((placed) => placed.value.node));
  for (const [path, record] of state.standbys) {
    const { owner } = record.value;
    if (state.nodes.has(owner) || holding.has(owner)) {
      seen.delete(path);
      continue;
    }
    const first = seen.get(path) ?? Date.now();
    seen.set(path, first);
    if (Date.now() - first < ORPHAN_GRACE_MS) continue;
    await store.kv
      .if(KEYS.standby(path), 'Mod', '==', record.modRevision)
      .then(store.kv.delete().key(KEYS.standby(path)))
      .commit();
    seen.delete(path);
  }
  for (const path of seen.keys()) if (!state.standbys.has(path)) seen.delete(path);
}

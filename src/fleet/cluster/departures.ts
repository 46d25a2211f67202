import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { ClusterError } from '../../errors.js';
import { holdsState } from '../state/lifecycle.js';
import type { Instance } from '../state/model.js';
import { departureDir } from './arrivals.js';
import { clusterCall, KEYS, type MoveRecord, nodeGone } from './etcd.js';
import type { MoveContext } from './move-context.js';
import { peerPost } from './peer.js';
import { parseSlotId } from './slots.js';
import { syncStandbys } from './standby.js';
import { type ClusterState, readCluster, type Versioned } from './state.js';

/** The state an instance of each kind of slot is in. */
const STATE_OF = { running: 'Running', warm: 'Warm', sleeping: 'Sleeping' } as const;
/** How long the node the instance goes to may take to download, adopt and wake it. */
const ARRIVAL_TIMEOUT_MS = 600_000;

export interface Departures {
  /** Looks for moves asked of this node soon (the cluster's moves changed). */
  poke(): void;
  /** Finishes the move in progress and stops. */
  stop(): Promise<void>;
}

export type DeparturesOptions = MoveContext;

/**
 * The departures of a cluster node: the moves with state asked of it (a drain's, or `cluster
 * move`'s), one at a time, each alone on the node (no converge meanwhile): the instance is slept,
 * packed and offered to the node it goes to (arrivals.ts), then destroyed here once it arrived.
 * A move that fails is marked failed in etcd (a drain then moves the slot cold) and the instance
 * goes back to the state it was in. Each round then brings the node's standby copies up to date
 * (standby.ts).
 */
export function startDepartures(options: DeparturesOptions): Departures {
  const { store, node, log } = options;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  const standbyFailures = new Map<string, { message: string; at: number }>();
  const round = async () => {
    const state = await clusterCall(store, 'reading the moves', () => readCluster(store));
    for (const [slot, move] of state.moves) {
      if (stopped) return;
      if (move.value.from !== node || move.value.failed || state.slots.get(slot)?.value.node !== node)
        continue;
      await options.server.exclusive(() => depart(options, state, slot, move));
    }
    if (!stopped) await syncStandbys(options, standbyFailures);
  };
  const poke = () => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = round()
      .catch((error: Error) => log(`move: ${error.message}`))
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          poke();
        }
      });
  };
  // Besides the watch: a move asked while this node was away, or a watch event lost.
  const timer = setInterval(poke, 10_000);
  timer.unref();
  poke();
  return {
    poke,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}

/** The instance a move takes: the one it names, else one of its slot's pool in its slot's state. */
function chooseInstance(instances: Instance[], slot: string, move: MoveRecord): Instance | undefined {
  const kind = parseSlotId(slot)?.kind ?? 'running';
  const movable = instances.filter((i) => holdsState(i.state));
  if (move.instance) return movable.find((i) => i.path === move.instance);
  // A departure cut off after its sleep left the instance Sleeping: it is taken again.
  return movable.find((i) => i.state === STATE_OF[kind]) ?? movable.find((i) => i.state === 'Sleeping');
}

async function depart(
  options: DeparturesOptions,
  state: ClusterState,
  slot: string,
  move: Versioned<MoveRecord>,
): Promise<void> {
  const { store, node, log } = options;
  const { fleet } = options.server;
  const pool = parseSlotId(slot)?.pool ?? '';
  const [tenant = '', poolId = ''] = pool.split('/');
  const instance = chooseInstance(fleet.store.listInstances({ tenant, pool: poolId }), slot, move.value);
  if (!instance) {
    const reason = move.value.instance
      ? `instance ${move.value.instance} is not Running, Warm or Sleeping on node ${node}`
      : `node ${node} has no ${STATE_OF[parseSlotId(slot)?.kind ?? 'running']} instance of pool ${pool}`;
    await markFailed(options, slot, move, { failed: reason, settled: true });
    return;
  }
  const to = state.nodes.get(move.value.to);
  const id = randomBytes(8).toString('hex');
  const out = departureDir(fleet.dir, id);
  const was = instance.state;
  const started = Date.now();
  try {
    if (!to) throw new ClusterError(`node ${move.value.to} is not alive`);
    if (!options.tls)
      throw new ClusterError(`node ${node}'s agent has no client certificate to reach other nodes`);
    log(`move: ${instance.path} (${slot}, ${was}) leaves for ${to.value.name}`);
    if (was !== 'Sleeping') await fleet.sleep(instance.path);
    const files = await fleet.packForMove(instance.path, out);
    await peerPost(
      to.value.advertise,
      '/v1/cluster/arrivals',
      { slot, departure: id, instance: { path: instance.path, address: instance.address }, files },
      options.tls,
      ARRIVAL_TIMEOUT_MS,
      nodeGone(store, move.value.to, 'during the move'),
    );
    await fleet.destroy(instance.path);
    log(
      `move: ${instance.path} (${slot}) moved to ${to.value.name} with its state in ${Date.now() - started} ms`,
    );
  } catch (error) {
    const reason = (error as Error).message.split('\n')[0] ?? 'failed';
    const failed = await markFailed(options, slot, move, { failed: reason });
    if (!failed) {
      // The record is gone or changed: the arrival flipped the slot although its answer was lost.
      const now = await clusterCall(store, `reading slot ${slot}`, () => readCluster(store));
      if (now.slots.get(slot)?.value.node === move.value.to) {
        await fleet.destroy(instance.path);
        log(`move: ${instance.path} (${slot}) arrived on ${move.value.to} although its answer was lost`);
        return;
      }
    }
    try {
      if (was !== 'Sleeping' && fleet.instance(instance.path).state === 'Sleeping') {
        await fleet.wake(instance.path);
        if (was === 'Warm') await fleet.warm(instance.path);
      }
    } finally {
      // The instance is back as it was (or as far as it got): `cluster move` reports the failure now.
      if (failed)
        await markFailed(options, slot, failed, { failed: reason, settled: true }).catch(() => undefined);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/**
 * Marks the move failed (`failed`, the reason; `settled` once its instance is back as it was), if
 * its record is still as read; resolves with the record as written, undefined if it was not.
 */
async function markFailed(
  options: DeparturesOptions,
  slot: string,
  move: Versioned<MoveRecord>,
  outcome: { failed: string; settled?: boolean },
): Promise<Versioned<MoveRecord> | undefined> {
  const record: MoveRecord = {
    ...move.value,
    ...outcome,
    failedAt: move.value.failedAt ?? new Date().toISOString(),
  };
  const result = await clusterCall(options.store, `marking the move of ${slot} failed`, () =>
    options.store.kv
      .if(KEYS.move(slot), 'Mod', '==', move.modRevision)
      .then(options.store.kv.put(KEYS.move(slot)).value(JSON.stringify(record)))
      .commit(),
  );
  if (!result.succeeded) return undefined;
  if (!move.value.failed)
    options.log(
      `move: ${slot} did not move to ${move.value.to} with its state: ${outcome.failed}${move.value.by === 'drain' ? '; the drain moves it cold' : ''}`,
    );
  return { value: record, modRevision: result.header.revision };
}

import { ConfigError } from '../../errors.js';
import { parseAddress } from '../state/ids.js';
import { holdsState } from '../state/lifecycle.js';
import { type ClusterStore, KEYS, type MoveRecord } from './etcd.js';
import { parseSlotId, type SlotKind } from './slots.js';
import { bookedOn, knownNodes, readCluster } from './state.js';

const KIND_OF: Record<string, SlotKind> = { Running: 'running', Warm: 'warm', Sleeping: 'sleeping' };

/**
 * Asks the node that runs `instance` to move it to `to` with its state (`vmkit cluster move`):
 * a move record on one of its node's slots of its pool and kind. Refused, with the reason, for an
 * instance or node the cluster does not know, a node that is dead, drained or full, an instance
 * in another state than Running, Warm or Sleeping, or one that moves already.
 */
export async function requestMove(
  store: ClusterStore,
  instance: string,
  to: string,
): Promise<{ slot: string; from: string }> {
  const { tenant, pool } = parseAddress(instance, 3);
  const state = await readCluster(store);
  const known = knownNodes(state);
  if (!known.includes(to))
    throw new ConfigError(
      `no node ${to} in the cluster (nodes: ${known.length > 0 ? known.join(', ') : 'none'})`,
    );
  if (!state.nodes.has(to)) throw new ConfigError(`node ${to} is not alive (its lease lapsed)`);
  if (state.drained.has(to))
    throw new ConfigError(`node ${to} is drained: \`vmkit cluster uncordon ${to}\` first`);
  // Where it holds its state; a copy left Stopped on another node is not the instance.
  const listing = (held: boolean) =>
    [...state.nodes].find(([, node]) =>
      node.value.instances.some((i) => i.path === instance && (!held || holdsState(i.state))),
    );
  const holder = listing(true) ?? listing(false);
  if (!holder)
    throw new ConfigError(`no instance ${instance} on an alive node (\`vmkit cluster status\` lists them)`);
  const [from, record] = holder;
  if (from === to) throw new ConfigError(`instance ${instance} is on node ${to} already`);
  const current = record.value.instances.find((i) => i.path === instance)?.state ?? '?';
  const kind = KIND_OF[current];
  if (!kind)
    throw new ConfigError(
      `instance ${instance} is ${current}: only a Running, Warm or Sleeping instance moves`,
    );
  const slot = [...state.slots].find(([id, placed]) => {
    const parsed = parseSlotId(id);
    return (
      placed.value.node === from &&
      parsed?.pool === `${tenant}/${pool}` &&
      parsed.kind === kind &&
      !state.moves.has(id)
    );
  });
  if (!slot)
    throw new ConfigError(
      `instance ${instance}: no ${kind} slot of pool ${tenant}/${pool} on node ${from} is free to move (a move of it may be under way)`,
    );
  const [id, placed] = slot;
  const capacity = state.nodes.get(to)?.value.capacity.memoryMiB ?? 0;
  if (bookedOn(state, to) + placed.value.memoryMiB > capacity)
    throw new ConfigError(
      `node ${to} has no room for ${instance}: ${bookedOn(state, to)} of ${capacity} MiB booked, it needs ${placed.value.memoryMiB}`,
    );
  const move: MoveRecord = { from, to, instance, by: 'move', since: new Date().toISOString() };
  const result = await store.kv
    .if(KEYS.move(id), 'Mod', '==', '0')
    .and(KEYS.slot(id), 'Mod', '==', placed.modRevision)
    .then(store.kv.put(KEYS.move(id)).value(JSON.stringify(move)))
    .commit();
  if (!result.succeeded)
    throw new ConfigError(`instance ${instance}: its slot ${id} changed as the move was asked; try again`);
  return { slot: id, from };
}

/**
 * Where a move stands: under way, done (its slot is on `to` and its record gone), or failed (its
 * record says why, or it was dropped: its node died, or its slot went elsewhere).
 */
export async function moveProgress(
  store: ClusterStore,
  slot: string,
  to: string,
): Promise<{ done: boolean; failed?: string }> {
  const state = await readCluster(store);
  const move = state.moves.get(slot)?.value;
  // Reported once the instance is back as it was, so that what the caller sees next holds.
  if (move?.failed && move.settled) return { done: false, failed: move.failed };
  if (move) return { done: false };
  const on = state.slots.get(slot)?.value.node;
  if (on === to) return { done: true };
  return {
    done: false,
    failed: `the move was dropped: slot ${slot} is ${on ? `on ${on}` : 'on no node'} now`,
  };
}

/** Removes a move's record (a failed one, once its reason was read). */
export async function forgetMove(store: ClusterStore, slot: string): Promise<void> {
  await store.kv.delete().key(KEYS.move(slot)).exec();
}

import type { ClusterStore } from './etcd.js';
import { KEYS, type MoveRecord, type NodeRecord, type SlotPlacement } from './etcd.js';
import { poolsFailingOn } from './failing.js';
import { bestOfK, desiredSlots, type Slot } from './slots.js';
import { bookedOn, type ClusterState } from './state.js';

/** One change to the slots: a slot placed (from nowhere, or from a node that is gone), or removed. */
export type Move =
  | {
      kind: 'place';
      slot: Slot;
      to: string;
      from?: string;
      previousMiB?: number;
      reason?: string;
      /** An arrival's flip: the move record it carried out (as read), removed in the same transaction. */
      moveRevision?: string;
    }
  | { kind: 'remove'; slot: string; from: string; memoryMiB: number };

/** A drained node's slot to move with its instance's state: asked of its node (departures.ts). */
export interface MoveRequest {
  slot: Slot;
  from: string;
  to: string;
}

export interface PlacementPlan {
  moves: Move[];
  /** Slots that no alive node has room for: they wait for capacity. */
  unplaced: Slot[];
  requests: MoveRequest[];
  /**
   * Move records done with: their slot left the node or the document, their node died, or a
   * failed `cluster move` was there long enough to be read.
   */
  stale: string[];
}

/** How long a failed `cluster move` stays listed (a drain's stays until its slot moved cold). */
const FAILED_MOVE_KEPT_MS = 300_000;

/**
 * What the scheduler changes, given the cluster as read: slots the document no longer asks for are
 * removed, then every slot with no node or on a node whose lease lapsed goes to the best of `k`
 * alive nodes by free memory (capacity less what slots book there). A drained node gets no slot,
 * and a node that keeps failing a pool (failing.ts) none of that pool's; the slots they have move
 * where another node has room.
 */
export function planPlacement(
  state: ClusterState,
  k: number,
  random: () => number = Math.random,
): PlacementPlan {
  const wanted = state.desired ? desiredSlots(state.desired.doc) : [];
  const wantedIds = new Set(wanted.map((slot) => slot.id));
  const booked = new Map([...state.nodes.keys()].map((node) => [node, bookedOn(state, node)]));
  const moves: Move[] = [];
  const requests: MoveRequest[] = [];
  // nothing applied yet: nothing to judge by
  if (!state.desired) return { moves, unplaced: [], requests, stale: [] };
  const stale = [...state.moves]
    .filter(
      ([id, { value }]) =>
        !wantedIds.has(id) ||
        state.slots.get(id)?.value.node !== value.from ||
        !state.nodes.has(value.from) ||
        (value.failed !== undefined &&
          value.by === 'move' &&
          Date.now() - Date.parse(value.failedAt ?? '') > FAILED_MOVE_KEPT_MS),
    )
    .map(([id]) => id);
  for (const [id, placed] of state.slots) {
    if (wantedIds.has(id)) continue;
    moves.push({ kind: 'remove', slot: id, from: placed.value.node, memoryMiB: placed.value.memoryMiB });
    const on = booked.get(placed.value.node);
    if (on !== undefined) booked.set(placed.value.node, on - placed.value.memoryMiB);
  }
  const failing = new Map([...state.nodes].map(([node, record]) => [node, poolsFailingOn(record.value)]));
  const avoid = (node: string, slot: Slot) =>
    state.drained.has(node) || (failing.get(node)?.has(`${slot.tenant}/${slot.pool}`) ?? false);
  const why = (node: string, slot: Slot) =>
    state.drained.has(node) ? `${node} is drained` : `${node} keeps failing pool ${slot.tenant}/${slot.pool}`;
  const candidatesFor = (slot: Slot) =>
    [...state.nodes]
      .filter(([node]) => !avoid(node, slot))
      .map(([node, record]) => ({
        node,
        freeMiB: record.value.capacity.memoryMiB - (booked.get(node) ?? 0),
      }));
  const unplaced: Slot[] = [];
  for (const slot of wanted) {
    const placed = state.slots.get(slot.id)?.value;
    if (placed && state.nodes.has(placed.node) && avoid(placed.node, slot)) {
      const asked = state.moves.get(slot.id)?.value;
      const askedHere = asked?.from === placed.node && !stale.includes(slot.id);
      if (state.drained.has(placed.node) && !(askedHere && asked?.failed)) {
        // Drained: it moves with its state, which its node ships (unless that failed: then cold).
        if (askedHere) continue;
        const to = bestOfK(candidatesFor(slot), slot.memoryMiB, k, random);
        if (to) {
          booked.set(to.node, (booked.get(to.node) ?? 0) + slot.memoryMiB);
          requests.push({ slot, from: placed.node, to: to.node });
        }
        continue;
      }
      // It keeps failing the pool, or failed to move with its state: it moves cold if another node has room, else it stays.
      const away = bestOfK(candidatesFor(slot), slot.memoryMiB, k, random);
      if (away) {
        booked.set(placed.node, (booked.get(placed.node) ?? 0) - placed.memoryMiB);
        booked.set(away.node, (booked.get(away.node) ?? 0) + slot.memoryMiB);
        moves.push({
          kind: 'place',
          slot,
          to: away.node,
          from: placed.node,
          previousMiB: placed.memoryMiB,
          reason: why(placed.node, slot),
        });
      }
      continue;
    }
    if (placed && state.nodes.has(placed.node)) {
      // Its pool's memory changed: booked again on its node, where it still fits.
      if (placed.memoryMiB !== slot.memoryMiB) {
        const node = state.nodes.get(placed.node)?.value as NodeRecord;
        const bookedThere = (booked.get(placed.node) ?? 0) - placed.memoryMiB;
        if (bookedThere + slot.memoryMiB <= node.capacity.memoryMiB) {
          booked.set(placed.node, bookedThere + slot.memoryMiB);
          moves.push({
            kind: 'place',
            slot,
            to: placed.node,
            from: placed.node,
            previousMiB: placed.memoryMiB,
          });
          continue;
        }
        booked.set(placed.node, bookedThere); // it moves: placed below like a slot of a lapsed node
      } else {
        continue;
      }
    }
    const choice = bestOfK(candidatesFor(slot), slot.memoryMiB, k, random);
    if (!choice) {
      unplaced.push(slot);
      continue;
    }
    booked.set(choice.node, (booked.get(choice.node) ?? 0) + slot.memoryMiB);
    moves.push({
      kind: 'place',
      slot,
      to: choice.node,
      ...(placed ? { from: placed.node, previousMiB: placed.memoryMiB } : {}),
    });
  }
  return { moves, unplaced, requests, stale };
}

export interface PlacementRound {
  placed: number;
  removed: number;
  /** Moves whose transaction found the cluster changed since the read: the next round redoes them. */
  conflicts: number;
  unplaced: number;
  /** Slots whose node was asked to move them with their state. */
  requested: number;
}

/**
 * Carries out one plan, each move in a transaction that holds only if nothing it relied on changed
 * since the read: the slot's revision, the target node's lease (alive, the same incarnation) and
 * the booked-memory counters of both nodes. So a slot is never placed twice and a node never
 * booked past its capacity, even with two schedulers at once. A move that fails is left to the
 * next round, which reads the cluster again.
 */
export async function applyPlacement(
  store: ClusterStore,
  state: ClusterState,
  plan: PlacementPlan,
  log: (line: string) => void = () => {},
): Promise<PlacementRound> {
  const round: PlacementRound = {
    placed: 0,
    removed: 0,
    conflicts: 0,
    unplaced: plan.unplaced.length,
    requested: 0,
  };
  const counters = new Map(
    [...state.booked].map(([node, entry]) => [
      node,
      { memoryMiB: entry.value.memoryMiB, modRevision: entry.modRevision },
    ]),
  );
  const counter = (node: string) => counters.get(node) ?? { memoryMiB: 0, modRevision: '0' };
  for (const move of plan.moves) {
    const slotId = move.kind === 'place' ? move.slot.id : move.slot;
    const slotRevision = state.slots.get(slotId)?.modRevision ?? '0';
    let txn = store.kv.if(KEYS.slot(slotId), 'Mod', '==', slotRevision);
    if (move.kind === 'place' && move.moveRevision)
      txn = txn.and(KEYS.move(slotId), 'Mod', '==', move.moveRevision);
    const changes: Array<[string, number]> = [];
    if (move.kind === 'place') {
      const lease = state.nodes.get(move.to)?.lease as string;
      txn = txn.and(KEYS.node(move.to), 'Lease', '==', lease);
      const released = move.previousMiB ?? move.slot.memoryMiB;
      if (move.from === move.to) changes.push([move.to, move.slot.memoryMiB - released]);
      else {
        changes.push([move.to, move.slot.memoryMiB]);
        if (move.from !== undefined) changes.push([move.from, -released]);
      }
    } else {
      changes.push([move.from, -move.memoryMiB]);
    }
    for (const [node] of changes) txn = txn.and(KEYS.booked(node), 'Mod', '==', counter(node).modRevision);
    const placement: SlotPlacement | undefined =
      move.kind === 'place' ? { node: move.to, memoryMiB: move.slot.memoryMiB } : undefined;
    const result = await txn
      .then(
        placement
          ? store.kv.put(KEYS.slot(slotId)).value(JSON.stringify(placement))
          : store.kv.delete().key(KEYS.slot(slotId)),
        ...changes.map(([node, delta]) =>
          store.kv
            .put(KEYS.booked(node))
            .value(JSON.stringify({ memoryMiB: Math.max(0, counter(node).memoryMiB + delta) })),
        ),
        ...(move.kind === 'place' && move.moveRevision ? [store.kv.delete().key(KEYS.move(slotId))] : []),
      )
      .commit();
    if (!result.succeeded) {
      round.conflicts += 1;
      continue;
    }
    for (const [node, delta] of changes)
      counters.set(node, {
        memoryMiB: Math.max(0, counter(node).memoryMiB + delta),
        modRevision: result.header.revision,
      });
    if (move.kind === 'place') {
      round.placed += 1;
      const why =
        move.from === move.to
          ? ` (booked again: ${move.previousMiB} -> ${move.slot.memoryMiB} MiB)`
          : move.from
            ? ` (from ${move.from}${move.reason ? `: ${move.reason}` : ''})`
            : '';
      log(`placed ${slotId} on ${move.to}${why}`);
    } else {
      round.removed += 1;
      log(`removed ${slotId} from ${move.from}`);
    }
  }
  round.requested = await askMoves(store, state, plan, log);
  return round;
}

/**
 * Writes the plan's move requests (each only if the slot's record is as read: no request is made
 * twice) and removes its stale move records; returns the requests made.
 */
async function askMoves(
  store: ClusterStore,
  state: ClusterState,
  plan: PlacementPlan,
  log: (line: string) => void,
): Promise<number> {
  for (const id of plan.stale) {
    const revision = state.moves.get(id)?.modRevision ?? '0';
    await store.kv
      .if(KEYS.move(id), 'Mod', '==', revision)
      .then(store.kv.delete().key(KEYS.move(id)))
      .commit();
  }
  let requested = 0;
  for (const { slot, from, to } of plan.requests) {
    const revision = plan.stale.includes(slot.id)
      ? undefined
      : (state.moves.get(slot.id)?.modRevision ?? '0');
    if (revision === undefined) continue; // removed just now: the next round reads it again
    const record: MoveRecord = { from, to, by: 'drain', since: new Date().toISOString() };
    const result = await store.kv
      .if(KEYS.move(slot.id), 'Mod', '==', revision)
      .then(store.kv.put(KEYS.move(slot.id)).value(JSON.stringify(record)))
      .commit();
    if (!result.succeeded) continue;
    requested += 1;
    log(`asked ${from} to move ${slot.id} to ${to} with its state (${from} is drained)`);
  }
  return requested;
}

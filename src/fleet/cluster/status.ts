import { checkDocumentQuotas } from '../desired/plan.js';
import type { DesiredDocument } from '../desired/schema.js';
import { electedLeader } from './election.js';
import { type ClusterStore, KEYS, type MoveRecord } from './etcd.js';
import type { FailingPool } from './failing.js';
import { desiredSlots } from './slots.js';
import { bookedOn, type ClusterState, knownNodes, readCluster } from './state.js';

/** Stores a checked document as the cluster's desired state; returns the revision it got. */
export async function applyDocument(store: ClusterStore, doc: DesiredDocument): Promise<string> {
  checkDocumentQuotas(doc);
  const response = await store.kv.put(KEYS.desired).value(JSON.stringify(doc)).exec();
  return response.header.revision;
}

export interface ClusterStatus {
  /** The document's revision, null before the first apply. */
  revision: string | null;
  /** The elected scheduler's node, null while there is none. */
  leader: string | null;
  nodes: Array<{
    name: string;
    alive: boolean;
    advertise: string;
    capacity: { memoryMiB: number; vcpus: number };
    use: { memoryMiB: number; running: number; instances: number };
    /** The memory the slots placed on it book. */
    bookedMiB: number;
    slots: number;
    /** Pools its converges keep failing; at FAILING_AFTER_CONVERGES in a row their slots move. */
    failing: FailingPool[];
    /** Since when it is drained (`vmkit cluster drain`), null when it is not. */
    drainedSince: string | null;
    reportedAt: string;
  }>;
  /** The instances the alive nodes report. */
  instances: Array<{ path: string; node: string; state: string }>;
  /** Slots the document asks for that are on no alive node, each with why it waits. */
  pending: PendingSlot[];
  /** Moves with state asked (a drain's, `cluster move`'s): under way, or failed with the reason. */
  moves: Array<{ slot: string } & MoveRecord>;
}

export interface PendingSlot {
  slot: string;
  /** The memory it needs on a node. */
  memoryMiB: number;
  reason: string;
}

/** Why a slot is on no alive node: no node (or all drained), no room on any, no scheduler, or a round not yet run. */
function pendingReason(state: ClusterState, memoryMiB: number, leader: string | undefined): string {
  const open = [...state.nodes.values()].filter(({ value }) => !state.drained.has(value.name));
  const free = open
    .map(({ value }) => ({ name: value.name, free: value.capacity.memoryMiB - bookedOn(state, value.name) }))
    .sort((a, b) => b.free - a.free);
  const [most] = free;
  if (!most) return state.nodes.size > 0 ? 'every alive node is drained' : 'no node is alive';
  if (most.free < memoryMiB)
    return `needs ${memoryMiB} MiB: the most free on the ${free.length} alive node(s) is ${most.free} MiB, on ${most.name}`;
  if (!leader) return 'no scheduler is elected yet';
  return `not placed yet: ${most.name} has room (${most.free} MiB free); the scheduler places it in its next round`;
}

/** The cluster as etcd has it: nodes, instances, the scheduler's leader and the document's revision. */
export async function clusterStatus(store: ClusterStore): Promise<ClusterStatus> {
  const state = await readCluster(store);
  const leader = await electedLeader(store);
  const slotsOn = (node: string) => [...state.slots.values()].filter((s) => s.value.node === node).length;
  const names = knownNodes(state);
  const nodes = names.map((name) => {
    const record = state.nodes.get(name)?.value;
    return {
      name,
      alive: record !== undefined,
      advertise: record?.advertise ?? '',
      capacity: record?.capacity ?? { memoryMiB: 0, vcpus: 0 },
      use: record?.use ?? { memoryMiB: 0, running: 0, instances: 0 },
      bookedMiB: bookedOn(state, name),
      slots: slotsOn(name),
      failing: record?.failing ?? [],
      drainedSince: state.drained.get(name)?.since ?? null,
      reportedAt: record?.reportedAt ?? '',
    };
  });
  const instances = [...state.nodes.values()].flatMap(({ value }) =>
    value.instances.map((instance) => ({ path: instance.path, node: value.name, state: instance.state })),
  );
  const pending = (state.desired ? desiredSlots(state.desired.doc) : [])
    .filter((slot) => !state.nodes.has(state.slots.get(slot.id)?.value.node ?? ''))
    .map((slot) => ({
      slot: slot.id,
      memoryMiB: slot.memoryMiB,
      reason: pendingReason(state, slot.memoryMiB, leader),
    }));
  const moves = [...state.moves].map(([slot, { value }]) => ({ slot, ...value }));
  return {
    revision: state.desired?.revision ?? null,
    leader: leader ?? null,
    nodes,
    instances,
    pending,
    moves,
  };
}

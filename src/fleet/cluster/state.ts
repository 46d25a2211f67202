import { type DesiredDocument, parseDesired } from '../desired/schema.js';
import {
  type ClusterStore,
  type DrainRecord,
  jsonOf,
  KEYS,
  keyOf,
  type MoveRecord,
  type NodeRecord,
  type SlotPlacement,
  type StandbyRecord,
} from './etcd.js';

/** A key's value with what a transaction compares: its revision of last change (and lease). */
export interface Versioned<T> {
  value: T;
  modRevision: string;
}

/** The cluster as one etcd read saw it, at one revision. */
export interface ClusterState {
  revision: string;
  /** The applied document, with the revision it was applied at. */
  desired?: { doc: DesiredDocument; revision: string };
  /** The nodes whose lease is alive, each with its lease id. */
  nodes: Map<string, Versioned<NodeRecord> & { lease: string }>;
  slots: Map<string, Versioned<SlotPlacement>>;
  booked: Map<string, Versioned<{ memoryMiB: number }>>;
  /** Nodes being drained (`vmkit cluster drain`): none of their slots stay, none come. */
  drained: Map<string, DrainRecord>;
  /** Slots asked to move with their state, by slot id. */
  moves: Map<string, Versioned<MoveRecord>>;
  /** Copies of Sleeping instances' states on other nodes, by instance path. */
  standbys: Map<string, Versioned<StandbyRecord>>;
}

/** Reads every key of the cluster in one request (one revision). */
export async function readCluster(store: ClusterStore): Promise<ClusterState> {
  const response = await store.kv.getAll().exec();
  const state: ClusterState = {
    revision: response.header.revision,
    nodes: new Map(),
    slots: new Map(),
    booked: new Map(),
    drained: new Map(),
    moves: new Map(),
    standbys: new Map(),
  };
  for (const kv of response.kvs) {
    const key = keyOf(kv);
    const modRevision = kv.mod_revision;
    if (key === KEYS.desired) {
      try {
        // A document that no longer parses (written by a newer vmkit) counts as none.
        state.desired = {
          doc: parseDesired(kv.value.toString('utf8'), 'the cluster document', 'json'),
          revision: modRevision,
        };
      } catch {}
      continue;
    }
    const [kind, ...rest] = key.split('/');
    const name = rest.join('/');
    if (kind === 'nodes') {
      const value = jsonOf<NodeRecord>(kv);
      if (value) state.nodes.set(name, { value, modRevision, lease: kv.lease });
    } else if (kind === 'slots') {
      const value = jsonOf<SlotPlacement>(kv);
      if (value && typeof value.node === 'string') state.slots.set(name, { value, modRevision });
    } else if (kind === 'drain') {
      state.drained.set(name, jsonOf<DrainRecord>(kv) ?? { since: '' });
    } else if (kind === 'moves') {
      const value = jsonOf<MoveRecord>(kv);
      if (value && typeof value.from === 'string' && typeof value.to === 'string')
        state.moves.set(name, { value, modRevision });
    } else if (kind === 'standby') {
      const value = jsonOf<StandbyRecord>(kv);
      if (value && typeof value.owner === 'string' && typeof value.holder === 'string')
        state.standbys.set(name, { value, modRevision });
    } else if (kind === 'booked') {
      const value = jsonOf<{ memoryMiB: number }>(kv);
      if (value && Number.isFinite(value.memoryMiB)) state.booked.set(name, { value, modRevision });
    }
  }
  return state;
}

/** The nodes the cluster knows: alive ones, those still holding slots, and drained ones. */
export function knownNodes(state: ClusterState): string[] {
  const holding = [...state.slots.values()].map((s) => s.value.node);
  return [...new Set([...state.nodes.keys(), ...holding, ...state.drained.keys()])].sort();
}

/** The memory the slots on `node` book, as its counter says (0 without one). */
export const bookedOn = (state: ClusterState, node: string) => state.booked.get(node)?.value.memoryMiB ?? 0;

import { ClusterError } from '../../errors.js';
import { recordClusterSlice } from '../state/cluster-slice.js';
import { type ClusterStore, KEYS, keyOf } from './etcd.js';

/** How many nodes a cluster can have: each holds one slice of every tenant subnet's addresses. */
export const MAX_NODES = 16;

/**
 * The node's index in the cluster, claimed once in etcd (the lowest free one, in a transaction)
 * and kept for good, so that its instance addresses stay in its slice of every tenant subnet.
 */
export async function claimNodeIndex(store: ClusterStore, node: string): Promise<number> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const taken = await store.kv.getAll().prefix(KEYS.indexes).exec();
    const indexOf = (key: string) => Number(key.slice(KEYS.indexes.length));
    const mine = taken.kvs.find((kv) => kv.value.toString('utf8') === node);
    if (mine) return indexOf(keyOf(mine));
    const used = new Set(taken.kvs.map((kv) => indexOf(keyOf(kv))));
    const free = Array.from({ length: MAX_NODES }, (_, n) => n).find((n) => !used.has(n));
    if (free === undefined)
      throw new ClusterError(`the cluster has ${MAX_NODES} nodes already: node ${node} cannot join`);
    const claimed = await store.kv
      .if(KEYS.index(free), 'Create', '==', 0)
      .then(store.kv.put(KEYS.index(free)).value(node))
      .commit();
    if (claimed.succeeded) return free;
  }
  throw new ClusterError(`node ${node}: no free node index could be claimed (others claimed them meanwhile)`);
}

/** Claims the node's index and records its address slice in the fleet folder (before any instance is made). */
export async function takeAddressSlice(store: ClusterStore, node: string, fleetDir: string): Promise<number> {
  const index = await claimNodeIndex(store, node);
  recordClusterSlice(fleetDir, node, { index, of: MAX_NODES });
  return index;
}

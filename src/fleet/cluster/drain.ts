import { ConfigError } from '../../errors.js';
import { type ClusterStore, KEYS } from './etcd.js';
import { knownNodes, readCluster } from './state.js';

/**
 * Drains `node`: the scheduler places no slot there, and moves the ones it has to nodes with room
 * (they start there as a node's lapsed slots do: cold). Refused for a node the cluster does not know.
 */
export async function drainNode(store: ClusterStore, node: string): Promise<void> {
  const known = knownNodes(await readCluster(store));
  if (!known.includes(node))
    throw new ConfigError(
      `no node ${node} in the cluster (nodes: ${known.length > 0 ? known.join(', ') : 'none'})`,
    );
  await store.kv
    .put(KEYS.drain(node))
    .value(JSON.stringify({ since: new Date().toISOString() }))
    .exec();
}

/** Ends the drain of `node`: it takes slots again (the ones that moved stay where they are). */
export async function uncordonNode(store: ClusterStore, node: string): Promise<boolean> {
  const deleted = await store.kv.delete().key(KEYS.drain(node)).exec();
  return Number(deleted.deleted) > 0;
}

/** What a drain of `node` still waits for: the slots on it and the instances it runs. */
export async function drainProgress(store: ClusterStore, node: string) {
  const state = await readCluster(store);
  const slots = [...state.slots].filter(([, placed]) => placed.value.node === node).map(([id]) => id);
  const running = state.nodes.get(node)?.value.use.running ?? 0;
  return { slots, running };
}

import type { Fleet } from '../fleet.js';
import { parseAddress } from '../state/ids.js';
import { holdsState, RefusedError } from '../state/lifecycle.js';
import type { ClusterState } from './state.js';

/**
 * An instance keeps its path when it moves or is adopted from a standby copy, so a node can be
 * left with a copy of a path that lives on elsewhere: a node that comes back stops its copies,
 * and those hold nothing but their data disk. Such copies make way for the instance.
 */

/**
 * Makes room here for `path`, which arrives with its state: a copy left here that holds nothing
 * (Stopped, Ready) is destroyed first; one that holds state is not, and the arrival is refused.
 */
export async function clearStaleCopy(fleet: Fleet, path: string, log: (line: string) => void): Promise<void> {
  const { tenant, pool, instance: id } = parseAddress(path, 3);
  const copy = fleet.store.listInstances({ tenant, pool }).find((i) => i.id === id);
  if (!copy) return;
  if (holdsState(copy.state)) throw new RefusedError(`instance ${path} is here already (${copy.state})`);
  await fleet.destroy(path);
  log(
    `cluster: the ${copy.state} copy of ${path} left here was destroyed: the instance arrives with its state`,
  );
}

/** Destroys this node's copies that hold nothing of instances another alive node holds. */
export async function dropCopiesHeldElsewhere(
  fleet: Fleet,
  state: ClusterState,
  node: string,
  log: (line: string) => void,
): Promise<void> {
  const elsewhere = new Map<string, string>();
  for (const [name, record] of state.nodes)
    if (name !== node)
      for (const instance of record.value.instances)
        if (holdsState(instance.state)) elsewhere.set(instance.path, name);
  for (const instance of fleet.store.listInstances()) {
    const there = elsewhere.get(instance.path);
    if (!there || holdsState(instance.state) || instance.intent) continue;
    await fleet.destroy(instance.path);
    log(
      `cluster: the ${instance.state} copy of ${instance.path} here was destroyed: the instance lives on ${there}`,
    );
  }
}

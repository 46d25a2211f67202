import type { Lease, Namespace, Watcher } from 'etcd3';
import type { ClusterStore } from './etcd.js';
import { KEYS } from './etcd.js';

/**
 * etcd's election recipe, written out so that leaving ends everything it started (etcd3's own
 * Campaign leaves a watch running after resign, which kept a stopped agent's process alive): each
 * candidate puts a key under its lease in the election's prefix; the oldest key (lowest create
 * revision) is the leader; the others watch the prefix and look again when a key goes.
 */
const electionOf = (store: ClusterStore): Namespace => store.kv.namespace(`${KEYS.election}/`);

/** The elected candidate's value (its node), undefined while there is none. */
export async function electedLeader(store: ClusterStore): Promise<string | undefined> {
  const oldest = await electionOf(store).getAll().sort('Create', 'Ascend').limit(1).exec();
  return oldest.kvs[0]?.value.toString('utf8');
}

export interface Candidacy {
  /** Resigns: revokes the candidate's lease and stops watching. */
  resign(): Promise<void>;
}

/**
 * Stands `value` as a candidate under a lease of `ttlSeconds`. `elected` is called when it leads;
 * `failed` when its lease is lost or etcd refused it (the caller stands again).
 */
export async function standForElection(
  store: ClusterStore,
  value: string,
  ttlSeconds: number,
  handlers: { elected: () => void; failed: (error: Error) => void },
): Promise<Candidacy> {
  const election = electionOf(store);
  const lease: Lease = election.lease(ttlSeconds, { autoKeepAlive: true }); // its keys go in the election's prefix
  let watcher: Watcher | undefined;
  let over = false;
  const end = async () => {
    over = true;
    await watcher?.cancel().catch(() => undefined);
  };
  const fail = (error: Error) => {
    if (over) return;
    end().then(() => handlers.failed(error));
  };
  lease.on('lost', fail);
  try {
    const id = await lease.grant();
    await lease.put(id).value(value);
    const key = Buffer.from(id);
    let leading = false;
    const look = async () => {
      if (over || leading) return;
      const oldest = await election.getAll().sort('Create', 'Ascend').limit(1).exec();
      if (oldest.kvs[0]?.key.equals(key) && !over) {
        leading = true;
        handlers.elected();
      }
    };
    watcher = await election.watch().prefix('').create();
    watcher.on('delete', () => look().catch(fail));
    watcher.on('error', fail);
    await look();
  } catch (error) {
    await end();
    lease.release();
    throw error;
  }
  return {
    async resign() {
      await end();
      await lease.revoke().catch(() => lease.release());
    },
  };
}

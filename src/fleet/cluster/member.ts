import type { Watcher } from 'etcd3';
import type { DesiredDocument } from '../desired/schema.js';
import { type ClusterStore, KEYS, keyOf, type NodeRecord } from './etcd.js';
import { joinMembership, type Membership } from './membership.js';
import { type Scheduler, startScheduler } from './scheduler.js';
import { shareOf } from './slots.js';
import { readCluster } from './state.js';

/** A node's share of the cluster's document as it stands, and where it came from. */
export interface NodeShare {
  doc: DesiredDocument;
  source: string;
}

/** This node's share of the document: every tenant and pool, with the counts of its slots. */
export async function readShare(store: ClusterStore, node: string): Promise<NodeShare | undefined> {
  const state = await readCluster(store);
  if (!state.desired) return undefined;
  const mine = [...state.slots].filter(([, placed]) => placed.value.node === node).map(([id]) => id);
  return {
    doc: shareOf(state.desired.doc, mine),
    source: `the cluster's document (revision ${state.desired.revision}), ${mine.length} slot(s) on ${node}`,
  };
}

export interface ClusterMemberOptions {
  store: ClusterStore;
  node: string;
  /** The node's record as it is now (capacity, use, instances). */
  record: () => NodeRecord;
  /**
   * Brings this host to its share (the agent's reconcile); called after every change of it.
   * Resolves true when something failed: it is then tried again, 5 s later and then less often.
   */
  converge: () => Promise<boolean | undefined>;
  /**
   * This node's record is still under the lease of its previous run (a restart within the TTL):
   * it registers before its first converge, which may take longer than what is left of that TTL.
   * Its slots never left it, so there is nothing to stop first.
   */
  resumes?: boolean;
  /** Called when the cluster's move records changed (departures.ts looks for its own). */
  onMoves?: () => void;
  /** Best of how many nodes the scheduler places each slot on (default 3). */
  placementK?: number;
  /** The TTL of the node's lease and of its campaign (default 10 s). */
  ttlSeconds?: number;
  log?: (line: string) => void;
}

export interface ClusterMember {
  readonly scheduler: Scheduler;
  /** Whether the node's record is under a live lease now (false while a lost lease is replaced). */
  registered(): boolean;
  /**
   * Stops scheduling (another node is elected), watching and renewing the lease: the node is dead
   * to the cluster after its TTL unless it joins again before. Instances stay as they are.
   * `beforeLapse` (the agent's own shutdown) runs while the lease is still renewed, so that the
   * TTL a restart has counts from the process's end. A second call waits for the first.
   */
  leave(beforeLapse?: () => Promise<void>): Promise<void>;
}

/**
 * Joins this host to the cluster. First it converges to its share as the cluster has it, so that
 * a node coming back stops the instances that were placed elsewhere meanwhile before anything
 * else (a restart within the TTL, whose slots stayed, registers first); then it registers under a
 * lease, campaigns for the scheduler, and converges again each time the document or the slots
 * change.
 */
export async function joinCluster(options: ClusterMemberOptions): Promise<ClusterMember> {
  const log = options.log ?? (() => {});
  const ttlSeconds = options.ttlSeconds ?? 10;
  const { store } = options;
  const register = () =>
    joinMembership({
      store,
      record: options.record,
      ttlSeconds,
      reportEveryMs: Math.max(1000, Math.floor((ttlSeconds * 1000) / 3)),
      log,
    });
  let membership: Membership;
  if (options.resumes) {
    membership = await register();
    await options.converge().catch(async (error) => {
      await membership.leave(); // lapses at its TTL, as the previous run's lease would have
      throw error;
    });
  } else {
    await options.converge();
    membership = await register();
  }
  const scheduler = startScheduler({
    store,
    node: options.node,
    k: options.placementK ?? 3,
    ttlSeconds,
    intervalMs: 2000,
    log,
  });
  const undo = async () => {
    await scheduler.stop().catch(() => undefined);
    await membership.leave({ revoke: true });
  };

  let converging: Promise<void> | undefined;
  let pending = false;
  let debounce: NodeJS.Timeout | undefined;
  let retry: NodeJS.Timeout | undefined;
  let failedInARow = 0;
  let leaving = false;
  let left: Promise<void> | undefined; // a second leave() waits for the first
  /** After a converge that failed something: again in 5 s, 10 s, 20 s ... at most a minute apart. */
  const retryLater = () => {
    clearTimeout(retry);
    const delay = Math.min(60_000, 5000 * 2 ** Math.min(failedInARow - 1, 4));
    retry = setTimeout(() => convergeSoon(), delay);
  };
  const convergeSoon = () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      if (leaving) return;
      if (converging) {
        pending = true;
        return;
      }
      converging = options
        .converge()
        .then((failed) => {
          failedInARow = failed ? failedInARow + 1 : 0;
          if (failed && !leaving) retryLater();
          return membership.reportNow();
        })
        .catch((error: Error) => {
          log(`cluster: converge failed: ${error.message}`);
          failedInARow += 1;
          if (!leaving) retryLater();
        })
        .finally(() => {
          converging = undefined;
          if (pending && !leaving) {
            pending = false;
            convergeSoon();
          }
        });
    }, 200);
  };

  const watcher: Watcher = await store.kv
    .watch()
    .prefix('')
    .create()
    .catch(async (error) => {
      await undo(); // not a member after all: a join tried again starts afresh
      throw error;
    });
  watcher.on('put', (kv) => onChange(keyOf(kv), kv.version === '1'));
  watcher.on('delete', (kv) => onChange(keyOf(kv), true));
  watcher.on('error', (error) => log(`cluster: watch: ${error.message}`));
  function onChange(key: string, createdOrDeleted: boolean) {
    if (key === KEYS.desired || key.startsWith(KEYS.slots)) {
      scheduler.poke();
      convergeSoon();
    } else if (key.startsWith(KEYS.nodes) && createdOrDeleted) {
      scheduler.poke(); // a node joined or its lease lapsed
    } else if (key.startsWith(KEYS.drains)) {
      scheduler.poke(); // a node drained or back in use
    } else if (key.startsWith(KEYS.moves)) {
      options.onMoves?.();
      scheduler.poke(); // a move failed (a drain's slot then moves cold), or was asked
    }
  }
  convergeSoon(); // what changed between the first converge and the watch

  return {
    scheduler,
    registered: () => membership.lease() !== undefined,
    leave(beforeLapse) {
      left ??= (async () => {
        leaving = true;
        clearTimeout(debounce);
        clearTimeout(retry);
        await watcher.cancel().catch(() => undefined);
        await scheduler.stop();
        await converging;
        try {
          await beforeLapse?.();
        } finally {
          await membership.leave();
        }
      })();
      return left;
    },
  };
}

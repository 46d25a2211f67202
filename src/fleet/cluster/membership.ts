import type { Lease } from 'etcd3';
import { ConfigError } from '../../errors.js';
import { type ClusterStore, jsonOf, KEYS, type NodeRecord } from './etcd.js';

export interface MembershipOptions {
  store: ClusterStore;
  /** The record as it is now (its use and instances change): asked at every renewal. */
  record: () => NodeRecord;
  /** The lease's time to live: a node that stops renewing is dead to the cluster after it. */
  ttlSeconds: number;
  /** How often the record is written again with fresh figures. */
  reportEveryMs: number;
  log: (line: string) => void;
}

export interface Membership {
  /** The lease the node's record is under now (a new one after a lapse). */
  lease(): string | undefined;
  /** Writes the record now (after a change of its instances), not at the next renewal. */
  reportNow(): Promise<void>;
  /**
   * Stops renewing the lease: the node is dead to the cluster after its TTL unless it registers
   * again before (a restart keeps its slots). `revoke` ends the lease at once instead.
   */
  leave(options?: { revoke?: boolean }): Promise<void>;
}

/**
 * Registers the node under a lease that etcd3 keeps alive, and writes its record again every
 * `reportEveryMs`. A lease that is lost (etcd unreachable past the TTL) is replaced by a new one.
 */
export async function joinMembership(options: MembershipOptions): Promise<Membership> {
  const { store, log } = options;
  let lease: Lease | undefined;
  let leaseId: string | undefined;
  let leaving = false;
  let timer: NodeJS.Timeout | undefined;
  const name = options.record().name;

  const register = async (): Promise<void> => {
    const next = store.kv.lease(options.ttlSeconds, { autoKeepAlive: true });
    next.on('lost', (error) => {
      if (leaving || next !== lease) return;
      log(`membership: lease lost (${error.message}); registering again`);
      leaseId = undefined;
      registerAgain();
    });
    lease = next;
    try {
      leaseId = await next.grant();
      await claimName(store, options.record(), leaseId);
    } catch (error) {
      if (lease === next) lease = undefined;
      leaseId = undefined;
      next.revoke().catch(() => undefined); // stops renewing at once; etcd drops it now, or at its TTL
      throw error;
    }
    log(`membership: node ${name} registered under lease ${leaseId} (TTL ${options.ttlSeconds} s)`);
  };

  /** Registers with a new lease, every 2 s until etcd answers (or the node leaves). */
  let retrying = false;
  const registerAgain = () => {
    if (retrying) return;
    retrying = true;
    setTimeout(() => {
      retrying = false;
      if (leaving) return;
      register().catch((error: Error) => {
        log(`membership: not registered yet: ${error.message.split('\n')[0]}`);
        registerAgain();
      });
    }, 2000).unref();
  };

  const write = async () => {
    try {
      if (lease && leaseId) await lease.put(KEYS.node(name)).value(JSON.stringify(options.record()));
    } catch (error) {
      log(`membership: report not written: ${(error as Error).message.split('\n')[0]}`);
    }
  };
  const report = () => {
    timer = setTimeout(async () => {
      if (leaving) return;
      await write();
      if (!leaving) report();
    }, options.reportEveryMs);
  };

  await register();
  report();
  return {
    lease: () => leaseId,
    reportNow: () => (leaving ? Promise.resolve() : write()),
    async leave({ revoke = false } = {}) {
      leaving = true;
      clearTimeout(timer);
      if (revoke) await lease?.revoke().catch(() => undefined);
      else lease?.release();
    },
  };
}

/**
 * The node's record in etcd if another agent than `agentId` holds the name under a live lease:
 * refused with a ConfigError that names that agent. Asked before a node converges to its share,
 * and again (atomically) as it registers.
 */
export async function refuseIfNameHeld(store: ClusterStore, name: string, agentId: string) {
  const held = (await store.kv.get(KEYS.node(name)).exec()).kvs[0];
  const holder = held && jsonOf<NodeRecord>(held);
  if (held && holder?.agentId !== agentId)
    throw new ConfigError(
      `node name ${name} is held by another agent (${holder?.advertise ?? 'unknown URL'}, up since ${holder?.startedAt ?? '?'}) under a live lease: give this agent another --node, or stop that one (its record lapses one TTL after it stops)`,
    );
  return held;
}

/**
 * Writes the node's record under `leaseId`, unless another agent holds the name under a live lease
 * (a restart of the same agent, whose old lease has not lapsed yet, takes its record over). The
 * write compares the record's revision with the one read: of two agents racing for one name, one
 * wins and the other is refused.
 */
async function claimName(store: ClusterStore, record: NodeRecord, leaseId: string): Promise<void> {
  const key = KEYS.node(record.name);
  for (let attempt = 0; attempt < 5; attempt++) {
    const held = await refuseIfNameHeld(store, record.name, record.agentId);
    const written = await store.kv
      .if(key, 'Mod', '==', held ? held.mod_revision : 0)
      .then(store.kv.put(key).value(JSON.stringify(record)).lease(leaseId))
      .commit();
    if (written.succeeded) return;
  }
  throw new ConfigError(
    `node name ${record.name}: its record kept changing while it was claimed (another agent?)`,
  );
}

import { ClusterError } from '../../errors.js';
import type { AgentServer } from '../agent/server.js';
import { type ClusterAgentOptions, joinAsAgent } from './agent-node.js';
import { clusterCall } from './etcd.js';
import type { ClusterMember } from './member.js';
import { takeAddressSlice } from './node-index.js';

export interface NodeJoin {
  /**
   * Why the agent's API is read-only now (it has not joined the cluster yet, or lost its lease);
   * undefined while it is a member. The agent refuses changes meanwhile (its share is unknown).
   */
  readOnlyReason(): string | undefined;
  /**
   * Resolves once the node joined. Rejects on a refusal that trying again cannot mend (another
   * agent holds the node's name, the cluster is full): etcd being unreachable is tried again.
   */
  joined: Promise<void>;
  /**
   * Stops trying to join, or leaves the cluster; the instances stay as they are. `beforeLapse`
   * runs before the node's lease stops being renewed (see ClusterMember.leave).
   */
  leave(beforeLapse?: () => Promise<void>): Promise<void>;
}

/**
 * Joins a started agent to the cluster, trying every `retryMs` while etcd does not answer: the
 * agent serves its host's API read-only meanwhile, rather than not at all.
 */
export function joinWhenReachable(
  server: AgentServer,
  options: ClusterAgentOptions & { retryMs?: number },
): NodeJoin {
  const { store, node } = options;
  const log = options.log ?? (() => {});
  const retryMs = options.retryMs ?? 2000;
  let member: ClusterMember | undefined;
  let reason = `node ${node} is joining the cluster`;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let attempt: Promise<unknown> = Promise.resolve();

  const tryToJoin = async () => {
    // Before the first converge: the instances' addresses come from the node's slice.
    await clusterCall(store, `claiming a node index for ${node}`, () =>
      takeAddressSlice(store, node, server.fleet.dir),
    );
    return clusterCall(store, `joining node ${node} to the cluster`, () => joinAsAgent(server, options));
  };
  const joined = new Promise<void>((resolve, reject) => {
    let failures = 0;
    const next = () => {
      const current = tryToJoin().then(
        (joinedMember) => {
          member = joinedMember; // one that joined as leave() was called is left by it
          if (failures > 0) log(`node ${node} joined the cluster after ${failures} failed attempt(s)`);
          resolve();
        },
        (error: Error) => {
          if (stopped) return resolve(); // left before it joined
          if (!(error instanceof ClusterError)) return reject(error);
          failures++;
          reason = `node ${node} has not joined the cluster (${error.message}): its API is read-only until it does`;
          // Said at once, then once a minute: an etcd that stays away must not flood the log.
          if (failures === 1 || failures % Math.max(1, Math.round(60_000 / retryMs)) === 0)
            log(`${reason}; trying again every ${retryMs / 1000} s`);
          timer = setTimeout(next, retryMs);
        },
      );
      attempt = current;
    };
    next();
  });
  joined.catch(() => {}); // the caller awaits it; a leave before that must not leave it unhandled

  return {
    readOnlyReason() {
      if (!member) return reason;
      return member.registered()
        ? undefined
        : `node ${node} lost its lease in etcd: its API is read-only until it registers again`;
    },
    joined,
    async leave(beforeLapse) {
      stopped = true;
      clearTimeout(timer);
      await attempt;
      if (member) await member.leave(beforeLapse);
      else await beforeLapse?.();
    },
  };
}

import { Etcd3, type IKeyValue, type Namespace } from 'etcd3';
import { ClusterError, ConfigError, VmkitError } from '../../errors.js';

/**
 * The cluster's keys in etcd, all under `vmkit/`:
 * - `nodes/<name>`: a node's record, under its lease (gone when the node stops renewing it);
 * - `desired`: the desired-state document (JSON); its revision is the document's;
 * - `slots/<tenant>/<pool>/<kind>-<n>`: the node an instance of the document is placed on;
 * - `booked/<node>`: the memory the slots on a node book, changed in the same transaction as them;
 * - `scheduler/<lease>`: the candidates for scheduler, each under its lease; the oldest leads;
 * - `index/<n>`: the node that holds slice n of every tenant subnet (kept across restarts).
 */
export const KEYS = {
  prefix: 'vmkit/',
  nodes: 'nodes/',
  node: (name: string) => `nodes/${name}`,
  desired: 'desired',
  slots: 'slots/',
  slot: (id: string) => `slots/${id}`,
  booked: (node: string) => `booked/${node}`,
  election: 'scheduler',
  indexes: 'index/',
  index: (n: number) => `index/${n}`,
} as const;

/** What a node says about itself, renewed every few seconds under its lease. */
export interface NodeRecord {
  name: string;
  /** The agent that holds the name (its fleet folder's id): another one is refused the name. */
  agentId: string;
  /** The URL of its agent's mutual-TLS API. */
  advertise: string;
  capacity: { memoryMiB: number; vcpus: number };
  use: { memoryMiB: number; running: number; instances: number };
  instances: Array<{ path: string; state: string }>;
  startedAt: string;
  reportedAt: string;
}

export interface SlotPlacement {
  node: string;
  memoryMiB: number;
}

const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** A node's name: letters, digits, dots, dashes and underscores (it is part of etcd keys). */
export function checkNodeName(name: string): string {
  if (!NODE_NAME.test(name))
    throw new ConfigError(
      `node name ${JSON.stringify(name)}: use 1 to 63 letters, digits, dots, dashes or underscores`,
    );
  return name;
}

/** The etcd endpoints: `--etcd` (comma-separated URLs), else $VMKIT_ETCD. */
export function etcdEndpoints(option: string | undefined): string[] {
  const text = option ?? process.env.VMKIT_ETCD;
  if (!text?.trim())
    throw new ConfigError(
      'no etcd endpoints: pass --etcd http://host:2379[,http://host2:2379...] or set VMKIT_ETCD',
    );
  return text.split(',').map((endpoint) => {
    const trimmed = endpoint.trim();
    let url: URL;
    try {
      url = new URL(trimmed);
    } catch {
      throw new ConfigError(`etcd endpoint ${JSON.stringify(trimmed)}: not a URL like http://127.0.0.1:2379`);
    }
    if (!/^https?:$/.test(url.protocol) || !url.port)
      throw new ConfigError(
        `etcd endpoint ${JSON.stringify(trimmed)}: expected http(s)://host:port, e.g. http://127.0.0.1:2379`,
      );
    return trimmed;
  });
}

/** A client of the cluster's etcd: its connection, and the namespace vmkit's keys live in. */
export interface ClusterStore {
  etcd: Etcd3;
  kv: Namespace;
  endpoints: string[];
  close(): void;
}

/** Connects to etcd (lazily: the first call fails within `dialTimeoutMs` when no member answers). */
export function connectCluster(endpoints: string[], dialTimeoutMs = 5_000): ClusterStore {
  const etcd = new Etcd3({ hosts: endpoints, dialTimeout: dialTimeoutMs });
  return { etcd, kv: etcd.namespace(KEYS.prefix), endpoints, close: () => etcd.close() };
}

/** A key's value as JSON, undefined where it is not JSON. */
export function jsonOf<T>(kv: IKeyValue): T | undefined {
  try {
    return JSON.parse(kv.value.toString('utf8')) as T;
  } catch {
    return undefined;
  }
}

/** A key as the namespace gives it (without the prefix: etcd3 removes it from what it returns). */
export const keyOf = (kv: IKeyValue) => kv.key.toString('utf8');

/**
 * Runs an etcd call for `what`; an error of the client (gRPC's) becomes a ClusterError that names
 * what failed and the endpoints, on one line.
 */
export async function clusterCall<T>(store: ClusterStore, what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof VmkitError) throw error;
    const message = ((error as Error).message.split('\n')[0] ?? '').replace(/\s*Resolution note:\s*$/, '');
    throw new ClusterError(`${what}: etcd at ${store.endpoints.join(', ')}: ${message}`);
  }
}

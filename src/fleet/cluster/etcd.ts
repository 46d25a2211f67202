import { readFileSync } from 'node:fs';
import { Etcd3, type IKeyValue, type Namespace } from 'etcd3';
import { ClusterError, ConfigError, VmkitError } from '../../errors.js';
import type { TravelFile } from '../snapshots/move-state.js';
import type { FailingPool } from './failing.js';

/**
 * The cluster's keys in etcd, all under `vmkit/`:
 * - `nodes/<name>`: a node's record, under its lease (gone when the node stops renewing it);
 * - `desired`: the desired-state document (JSON); its revision is the document's;
 * - `slots/<tenant>/<pool>/<kind>-<n>`: the node an instance of the document is placed on;
 * - `booked/<node>`: the memory the slots on a node book, changed in the same transaction as them;
 * - `scheduler/<lease>`: the candidates for scheduler, each under its lease; the oldest leads;
 * - `index/<n>`: the node that holds slice n of every tenant subnet (kept across restarts);
 * - `drain/<node>`: a node the operator drains: no slot goes there, the ones it has move away.
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
  drains: 'drain/',
  drain: (node: string) => `drain/${node}`,
  moves: 'moves/',
  move: (slot: string) => `moves/${slot}`,
  standbys: 'standby/',
  standby: (path: string) => `standby/${path}`,
} as const;

/**
 * A copy of a Sleeping instance's state kept on another node (standby.ts), so that the instance
 * wakes with its state elsewhere if its node dies.
 */
export interface StandbyRecord {
  /** The node the instance sleeps on. */
  owner: string;
  /** The node that keeps the copy. */
  holder: string;
  /** Which sleep it is a copy of (sleepStateId). */
  sleepId: string;
  /** The address the guest slept with. */
  address: string;
  files: TravelFile[];
  at: string;
}

/**
 * A slot asked to move with its instance's state (a drain, or `vmkit cluster move`): its node
 * sleeps the instance and ships the state to `to` (departures.ts), whose arrival flips the slot.
 */
export interface MoveRecord {
  from: string;
  to: string;
  /** The instance to move (`cluster move`); without it, the source picks one of the slot's pool and kind. */
  instance?: string;
  by: 'drain' | 'move';
  since: string;
  /** Why it did not move with its state; a drained node's slot then moves cold. */
  failed?: string;
  failedAt?: string;
  /** After a failure: the instance is back in the state it was in on the node it did not leave. */
  settled?: boolean;
}

/** An operator's drain of a node (`vmkit cluster drain`), until `uncordon`. */
export interface DrainRecord {
  since: string;
}

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
  /** Pools its converges keep failing (see failing.ts); absent or empty when none. */
  failing?: FailingPool[];
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

/** TLS to etcd: the CA that signed its certificate and, where etcd asks for one, this client's certificate and key. */
export interface EtcdTls {
  ca: string;
  cert?: string;
  key?: string;
}

/**
 * TLS to etcd from `--etcd-ca`, `--etcd-cert` and `--etcd-key` (else $VMKIT_ETCD_CA, $VMKIT_ETCD_CERT
 * and $VMKIT_ETCD_KEY); undefined when none is given (plain http:// endpoints).
 */
export function etcdTls(options: {
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
}): EtcdTls | undefined {
  const ca = options.etcdCa ?? (process.env.VMKIT_ETCD_CA || undefined);
  const cert = options.etcdCert ?? (process.env.VMKIT_ETCD_CERT || undefined);
  const key = options.etcdKey ?? (process.env.VMKIT_ETCD_KEY || undefined);
  if (!ca && !cert && !key) return undefined;
  if (!ca)
    throw new ConfigError("--etcd-cert and --etcd-key need --etcd-ca: the CA that signed etcd's certificate");
  if (Boolean(cert) !== Boolean(key))
    throw new ConfigError('--etcd-cert and --etcd-key go together: the client certificate and its key');
  return { ca, ...(cert && key ? { cert, key } : {}) };
}

const readTlsFile = (path: string, what: string) => {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new ConfigError(`cannot read ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`);
  }
};

export interface ConnectOptions {
  /** The first call fails within this when no member answers (default 5 s). */
  dialTimeoutMs?: number;
  /** TLS to etcd (its endpoints must be https://). */
  tls?: EtcdTls;
}

/** Connects to etcd (lazily: the first call fails within `dialTimeoutMs` when no member answers). */
export function connectCluster(endpoints: string[], options: ConnectOptions = {}): ClusterStore {
  const { tls } = options;
  if (tls) {
    const plain = endpoints.filter((endpoint) => !endpoint.startsWith('https://'));
    if (plain.length > 0)
      throw new ConfigError(`TLS to etcd (--etcd-ca) needs https:// endpoints: ${plain.join(', ')}`);
  }
  const etcd = new Etcd3({
    hosts: endpoints,
    dialTimeout: options.dialTimeoutMs ?? 5_000,
    ...(tls
      ? {
          credentials: {
            rootCertificate: readTlsFile(tls.ca, '--etcd-ca'),
            ...(tls.cert && tls.key
              ? {
                  certChain: readTlsFile(tls.cert, '--etcd-cert'),
                  privateKey: readTlsFile(tls.key, '--etcd-key'),
                }
              : {}),
          },
        }
      : {}),
  });
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
    throw new ClusterError(
      `${what}: etcd at ${store.endpoints.join(', ')}: ${plainTlsFailure(message) ?? message}`,
    );
  }
}

/** A TLS failure in gRPC's words (OpenSSL's codes and source paths) said plainly; undefined for others. */
function plainTlsFailure(message: string): string | undefined {
  if (/alert bad certificate|alert certificate required/.test(message))
    return 'etcd refused this client: it asks for a client certificate from its CA (--etcd-cert and --etcd-key)';
  if (/self[- ]signed|unable to (get local issuer|verify)|certificate verify failed/i.test(message))
    return "etcd's certificate is not signed by the CA given (--etcd-ca)";
  if (/wrong version number|packet length too long|http_request/i.test(message))
    return 'etcd does not speak TLS there (an http:// endpoint?)';
  return undefined;
}

/**
 * Asked while waiting on another node: the reason to stop waiting once its lease lapsed (it died
 * `during` the wait), else undefined.
 */
export const nodeGone = (store: ClusterStore, node: string, during: string) => async () =>
  (await store.kv.get(KEYS.node(node)).exists())
    ? undefined
    : `node ${node} died ${during} (its lease lapsed)`;

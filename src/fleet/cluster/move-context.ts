import type { AgentServer } from '../agent/server.js';
import type { ClusterStore } from './etcd.js';
import type { TunnelTls } from './tunnel.js';

/** What a cluster node's moves and standby copies work with (departures.ts, standby.ts). */
export interface MoveContext {
  store: ClusterStore;
  node: string;
  server: AgentServer;
  /** The agent's client certificate: without it nothing moves with its state (each move fails). */
  tls: TunnelTls | undefined;
  log: (line: string) => void;
}

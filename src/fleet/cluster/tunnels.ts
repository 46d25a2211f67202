import type { ClusterState } from './state.js';
import { openTunnel, type TunnelTls } from './tunnel.js';

/** The hub of each tenant this node must tunnel to: the first by name of the alive nodes that hold its slots. */
export function tunnelHubs(state: ClusterState, node: string): Map<string, string> {
  const hubs = new Map<string, string>();
  for (const tenant of state.desired?.doc.tenants ?? []) {
    const holders = [
      ...new Set(
        [...state.slots]
          .filter(([id, slot]) => id.startsWith(`${tenant.id}/`) && state.nodes.has(slot.value.node))
          .map(([, slot]) => slot.value.node),
      ),
    ].sort();
    const hub = holders[0];
    if (hub !== undefined && hub !== node && holders.includes(node)) hubs.set(tenant.id, hub);
  }
  return hubs;
}

/**
 * This node's tunnels, one per tenant it shares with other nodes, to that tenant's hub (see
 * tunnel.ts). `update` after every converge opens, moves and closes them; a tunnel that drops
 * while still wanted is opened again after a second.
 */
export class TunnelSet {
  private readonly tunnels = new Map<string, { hub: string; close: () => void }>();
  private wanted = new Map<string, { hub: string; url: string }>();
  /** Failed attempts in a row per tenant: said at the first, then once a minute (one a second are made). */
  private readonly failures = new Map<string, number>();
  private closed = false;

  constructor(
    private readonly node: string,
    private readonly fleetDir: string,
    private readonly tls: TunnelTls,
    private readonly log: (line: string) => void,
  ) {}

  update(state: ClusterState): void {
    this.wanted = new Map(
      [...tunnelHubs(state, this.node)].flatMap(([tenant, hub]) => {
        const url = state.nodes.get(hub)?.value.advertise;
        return url ? [[tenant, { hub, url }] as const] : [];
      }),
    );
    for (const [tenant, tunnel] of this.tunnels) {
      if (this.wanted.get(tenant)?.hub === tunnel.hub) continue;
      tunnel.close();
      this.tunnels.delete(tenant);
      this.log(`tunnel: tenant ${tenant}: left node ${tunnel.hub}`);
    }
    for (const tenant of this.wanted.keys()) if (!this.tunnels.has(tenant)) this.open(tenant);
  }

  private open(tenant: string): void {
    const want = this.wanted.get(tenant);
    if (this.closed || !want) return;
    const entry = { hub: want.hub, close: () => {} };
    this.tunnels.set(tenant, entry);
    const retry = () => {
      if (this.tunnels.get(tenant) === entry) this.tunnels.delete(tenant);
      setTimeout(() => {
        if (!this.closed && this.wanted.get(tenant)?.hub === want.hub && !this.tunnels.has(tenant))
          this.open(tenant);
      }, 1000).unref();
    };
    openTunnel(want.url, tenant, this.fleetDir, this.tls).then(
      (tunnel) => {
        if (this.closed || this.tunnels.get(tenant) !== entry) return tunnel.close();
        entry.close = () => tunnel.close();
        const failed = this.failures.get(tenant) ?? 0;
        this.failures.delete(tenant);
        this.log(
          `tunnel: tenant ${tenant}: joined to node ${want.hub}${failed ? ` after ${failed} failed attempt(s)` : ''}`,
        );
        tunnel.closed.then(() => {
          if (this.tunnels.get(tenant) !== entry) return;
          this.log(`tunnel: tenant ${tenant}: the tunnel to node ${want.hub} closed; opening it again`);
          retry();
        });
      },
      (error: Error) => {
        if (this.tunnels.get(tenant) !== entry) return;
        const failed = (this.failures.get(tenant) ?? 0) + 1;
        this.failures.set(tenant, failed);
        if (failed === 1 || failed % 60 === 0)
          this.log(
            `tunnel: tenant ${tenant}: node ${want.hub}: ${error.message}; trying again every second${failed > 1 ? ` (${failed} attempts failed so far)` : ''}`,
          );
        retry();
      },
    );
  }

  closeAll(): void {
    this.closed = true;
    for (const tunnel of this.tunnels.values()) tunnel.close();
    this.tunnels.clear();
  }
}

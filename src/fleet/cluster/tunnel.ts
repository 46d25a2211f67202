import { existsSync, readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { request } from 'node:https';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { ClusterError } from '../../errors.js';
import { switchSocket } from '../../network/switch-daemon.js';
import { FLEET_ID } from '../state/ids.js';
import { networkDir } from '../vmm/vm.js';

/**
 * Tenant networks across hosts: a tenant's switch on one node joined to its switch on another by
 * a tunnel over the agents' mutual TLS. A tunnel is an HTTPS upgrade on the agent's port
 * (`GET /v1/cluster/tunnel/<tenant>`) that then carries the switch's own records (each frame
 * after its 32-bit length) both ways, joined to each switch as one more port. Only switches of
 * the same tenant are joined, so other tenants stay apart; the nodes of a tenant form a star
 * around one hub (no loop, so the learning switches need no spanning tree).
 */
const TUNNEL_PATH = new RegExp(`^/v1/cluster/tunnel/(${FLEET_ID.source.replace(/^\^|\$$/g, '')})$`);

/** Joins two streams until either ends; ending one ends the other. */
function splice(a: Duplex, b: Duplex): void {
  a.pipe(b);
  b.pipe(a);
  const end = () => {
    a.destroy();
    b.destroy();
  };
  a.on('close', end);
  b.on('close', end);
  a.on('error', end);
  b.on('error', end);
}

/**
 * The agent's side: answers tunnel upgrades from clients with a certificate of its CA, for the
 * tenants whose switch runs on this node.
 */
export function tunnelUpgradeHandler(fleetDir: string, log: (line: string) => void) {
  return (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const refuse = (status: string) => {
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n`);
    };
    const tenant = TUNNEL_PATH.exec(request.url ?? '')?.[1];
    if (!(socket as TLSSocket).authorized) return refuse('403 Forbidden');
    if (!tenant || request.headers.upgrade !== 'vmkit-tunnel') return refuse('404 Not Found');
    const path = switchSocket(networkDir(fleetDir, tenant));
    if (!existsSync(path)) return refuse('404 Not Found');
    const local: Socket = connect(path);
    local.once('error', () => refuse('503 Service Unavailable'));
    local.once('connect', () => {
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: vmkit-tunnel\r\nConnection: Upgrade\r\n\r\n',
      );
      if (head.length) local.write(head);
      splice(socket, local);
      log(`tunnel: tenant ${tenant}: a node joined this switch`);
    });
  };
}

export interface TunnelTls {
  ca: string;
  cert: string;
  key: string;
}

/** Opens a tunnel from this node's switch of `tenant` to the agent at `url`; resolves once joined. */
export function openTunnel(
  url: string,
  tenant: string,
  fleetDir: string,
  tls: TunnelTls,
  timeoutMs = 10_000,
): Promise<{ closed: Promise<void>; close(): void }> {
  return new Promise((resolve, reject) => {
    const target = new URL(`/v1/cluster/tunnel/${tenant}`, url);
    const outgoing = request(target, {
      method: 'GET',
      headers: { Connection: 'Upgrade', Upgrade: 'vmkit-tunnel' },
      ca: readFileSync(tls.ca),
      cert: readFileSync(tls.cert),
      key: readFileSync(tls.key),
      timeout: timeoutMs,
    });
    outgoing.on('timeout', () =>
      outgoing.destroy(new ClusterError(`no answer from ${url} within ${timeoutMs} ms`)),
    );
    outgoing.on('error', reject);
    outgoing.on('response', (response) => {
      response.resume();
      reject(new ClusterError(`${url} refused the tunnel of tenant ${tenant}: ${response.statusCode}`));
    });
    outgoing.on('upgrade', (_response, remote, head) => {
      const local = connect(switchSocket(networkDir(fleetDir, tenant)));
      local.once('error', (error) => {
        remote.destroy();
        reject(error);
      });
      local.once('connect', () => {
        if (head.length) local.write(head);
        splice(remote, local);
        const closed = new Promise<void>((done) => remote.once('close', () => done()));
        resolve({ closed, close: () => remote.destroy() });
      });
    });
    outgoing.end();
  });
}

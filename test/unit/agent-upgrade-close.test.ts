import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { certPath, initCerts, keyPath } from '../../src/fleet/agent/certs.js';
import { startAgent } from '../../src/fleet/agent/server.js';

test('an agent that closes refuses a tunnel upgrade arriving meanwhile, instead of waiting for it for ever', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vmkit-upgrade-close-'));
  const certs = join(root, 'certs');
  const held: Array<{ end(): void }> = [];
  let sockets: TLSSocket[] = [];
  try {
    await initCerts(certs, { ca: true });
    const server = await startAgent({
      fleetDir: join(root, 'fleet'),
      certsDir: certs,
      port: 0,
      // A tunnel's end: answers the upgrade and keeps the connection, as tunnels do.
      upgrade: (_request, socket) => {
        socket.write(
          'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: vmkit-tunnel\r\n\r\n',
        );
        held.push(socket);
      },
    });
    const { port } = new URL(server.url);
    // A peer that connected before the close, and asks for its tunnel once the close has begun.
    const peer = tlsConnect({
      host: '127.0.0.1',
      port: Number(port),
      ca: readFileSync(certPath(certs, 'ca')),
      cert: readFileSync(certPath(certs, 'client')),
      key: readFileSync(keyPath(certs, 'client')),
      servername: 'localhost',
    });
    sockets = [peer];
    await new Promise<void>((resolve, reject) => peer.once('secureConnect', resolve).once('error', reject));
    const closing = server.close();
    peer.on('error', () => {});
    peer.write(
      `GET /v1/cluster/tunnel/acme HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: vmkit-tunnel\r\n\r\n`,
    );
    const closed = await Promise.race([
      closing.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5000)),
    ]);
    assert.ok(closed, 'the close still waits 5 s later');
    assert.equal(held.length, 0, 'no tunnel was set up during the close');
  } finally {
    for (const socket of sockets) socket.destroy();
    for (const socket of held) socket.end();
    rmSync(root, { recursive: true, force: true });
  }
});

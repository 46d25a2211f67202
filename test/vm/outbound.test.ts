// Outbound access (`internet: true`) must not open the host to the guest: services bound to the
// host's loopback (or any of its own addresses) stay out of reach, even for a guest whose root
// routes 127.0.0.1 out through its NIC; only the named `hostServices` answer. Every address
// aimed at is this machine's: the host's loopback and own addresses, and the guest's gateway
// (never an outside address, not even to show that outbound works: the routes and the resolver
// show that).
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { type Machine, removeSnapshot, startMachine } from '../../src/index.js';
import { lacks } from '../helpers.js';

/** A TCP service on the host that says `word` to whoever connects; resolves with its port. */
async function service(word: string, host: string, port = 0): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    socket.on('error', () => {});
    socket.end(`${word}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const address = server.address();
  assert.ok(address && typeof address === 'object');
  return { server, port: address.port };
}

/** The host's own IPv4 address that is not loopback, if it has one. */
const hostAddress = Object.values(networkInterfaces())
  .flat()
  .find((entry) => entry && entry.family === 'IPv4' && !entry.internal)?.address;

/** A shell line that prints what a TCP connection to address:port says, or "closed". */
const dial = (address: string, port: number) =>
  `(timeout 5 nc ${address} ${port} </dev/null || true) | grep . || echo closed`;

describe('outbound access and the host', { skip: lacks('hostNetwork') }, () => {
  const services: Server[] = [];
  let port: number;
  let anyPort: number;
  let open: Machine;
  let listed: Machine;

  before(async () => {
    const loopback = await service('loopback-secret', '127.0.0.1');
    services.push(loopback.server);
    port = loopback.port;
    try {
      services.push((await service('loopback6-secret', '::1', port)).server);
    } catch {} // no IPv6 loopback on this host
    const wildcard = await service('wildcard-secret', '0.0.0.0');
    services.push(wildcard.server);
    anyPort = wildcard.port;
    [open, listed] = await Promise.all([
      startMachine({ name: 'open', internet: true }),
      startMachine({ name: 'listed', internet: true, hostServices: { api: port } }),
    ]);
  });

  after(async () => {
    await Promise.allSettled([open?.close(), listed?.close()]);
    for (const server of services) server.close();
  });

  it('has a way out: a default route and a resolver', async () => {
    assert.match(await open.succeed('ip route'), /^default via \S+ dev eth\d/m);
    assert.match(await open.succeed('cat /etc/resolv.conf'), /^nameserver \S+/m);
  });

  it("does not reach the host's loopback through the gateway or the user-mode host address", async () => {
    const gateway = /^default via (\S+)/m.exec(await open.succeed('ip route'))?.[1];
    assert.ok(gateway);
    for (const address of new Set(['10.0.2.2', gateway])) {
      assert.equal((await open.succeed(dial(address, port))).trim(), 'closed', `${address}:${port}`);
    }
  });

  it("does not reach the host's loopback when the guest routes 127.0.0.1 out through its NIC", async () => {
    const route = await open.succeed('ip route');
    const [, gateway, dev] = /^default via (\S+) dev (\S+)/m.exec(route) ?? [];
    assert.ok(gateway && dev, route);
    // What a tenant's root can do: take 127/8 off the loopback and send it to the gateway.
    await open.succeed(
      [
        `sysctl -w net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.${dev}.route_localnet=1`,
        'ip route del local 127.0.0.0/8 table local',
        'ip route del local 127.0.0.1 table local',
        'ip addr del 127.0.0.1/8 dev lo',
        `ip route add 127.0.0.1/32 via ${gateway} dev ${dev}`,
      ].join(' && '),
    );
    assert.match(await open.succeed('ip route get 127.0.0.1'), new RegExp(`dev ${dev}`));
    assert.equal((await open.succeed(dial('127.0.0.1', port))).trim(), 'closed');
  });

  it("does not reach services on the host's own addresses", { skip: !hostAddress }, async () => {
    assert.equal((await open.succeed(dial(hostAddress as string, anyPort))).trim(), 'closed');
  });

  it('reaches a listed host service by its name, and nothing else on the host', async () => {
    assert.equal((await listed.succeed(dial('api', port))).trim(), 'loopback-secret');
    assert.equal((await listed.succeed(dial('10.0.2.2', port))).trim(), 'closed');
    assert.equal((await listed.succeed(dial('10.0.2.2', anyPort))).trim(), 'closed');
  });

  it('a restored machine has its NIC out again, as closed to the host', {
    skip: lacks('snapshot'),
  }, async () => {
    const snapshot = await listed.snapshot();
    try {
      await using clone = await snapshot.restore({ name: 'clone' });
      assert.match(await clone.succeed('ip route'), /^default via 10\.0\.3\.2 dev eth1/m);
      assert.equal((await clone.succeed(dial('10.0.3.2', port))).trim(), 'closed');
      assert.equal((await clone.succeed(dial('10.0.2.2', port))).trim(), 'closed');
    } finally {
      await removeSnapshot(snapshot);
    }
  });

  it('its relay runs beside its QEMU and ends with it', async () => {
    const relayOf = (machine: Machine) =>
      readdirSync('/proc')
        .filter((pid) => /^\d+$/.test(pid) && Number(pid) !== machine.pid)
        .filter((pid) => {
          try {
            const words = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
            return (
              words.some((word) => word.startsWith(`${machine.stateDir}/`)) && !words[0]?.includes('qemu')
            );
          } catch {
            return false;
          }
        });
    const relays = relayOf(open);
    assert.equal(relays.length, 1, `one relay for the machine: ${relays.join(', ')}`);
    await open.close();
    const deadline = Date.now() + 10_000;
    while (relays.some((pid) => existsSync(`/proc/${pid}`)) && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(
      relays.filter((pid) => existsSync(`/proc/${pid}`)),
      [],
      'the relay ended with its QEMU',
    );
  });
});

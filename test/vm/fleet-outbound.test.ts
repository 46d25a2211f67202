// A fleet tenant with outbound access: its instance has a way out (eth2, a route, QEMU's
// user-mode network behind a relay of vmkit's) but reaches no service on the host's loopback,
// not even when the guest's root routes 127.0.0.1 out; the relay lives as long as the VMM.
// Every address aimed at is this machine's (the host's loopback, the NIC's gateway).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Fleet } from '../../src/fleet/fleet.js';
import { instanceDir } from '../../src/fleet/vmm/vm.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { lacks } from '../helpers.js';

const dir = mkdtempSync('/tmp/vmkit-fob-');
const sh = (script: string) => ['sh', '-c', script];
const PATH = 'out/box/o1';

/** The relays of the instance's folder (QEMU names their sockets too). */
const relays = (folder: string) =>
  processesNaming(join(folder, 'out.sock'))
    .map((record) => record.pid)
    .filter((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('outbound/host'));

describe('fleet outbound access and the host', { skip: lacks('detached') || lacks('snapshot') }, () => {
  let fleet: Fleet;
  let server: Server;
  let port: number;
  let folder: string;

  const dial = async (address: string) => {
    const script = `(timeout 5 nc ${address} ${port} </dev/null || true) | grep . || echo closed`;
    return (await fleet.exec(PATH, sh(script))).stdout.toString().trim();
  };

  before(async () => {
    server = createServer((socket) => {
      socket.on('error', () => {});
      socket.end('loopback-secret\n');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
    fleet = new Fleet({ dir });
    fleet.createTenant({ id: 'out', subnet: '10.73.0.0/24', outbound: true });
    await fleet.createPool({ tenant: 'out', id: 'box', memoryMiB: 128 });
    const instance = await fleet.createInstance('out/box', 'o1');
    folder = instanceDir(dir, instance.seq);
    assert.equal((await fleet.start(PATH)).state, 'Running');
  });

  after(async () => {
    await fleet?.destroyTenant('out').catch(() => {});
    await fleet?.close();
    for (const leftover of processesNaming(dir)) await stopDetached(leftover, 0);
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('has a way out on eth2 and a resolver, and a relay beside its VMM', async () => {
    const routes = (await fleet.exec(PATH, sh('ip route'))).stdout.toString();
    assert.match(routes, /^default via 10\.0\.2\.2 dev eth2/m);
    const running = relays(folder);
    assert.equal(running.length, 1);
    if (process.getuid?.() === 0) {
      const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${running[0]}/status`, 'utf8'))?.[1];
      assert.notEqual(uid, '0', 'the relay runs as the tenant uid, not root');
    }
  });

  it("reaches no service on the host's loopback, through the gateway or a route of 127.0.0.1", async () => {
    assert.equal(await dial('10.0.2.2'), 'closed');
    await fleet.exec(
      PATH,
      sh(
        [
          'sysctl -w net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.eth2.route_localnet=1',
          'ip route del local 127.0.0.0/8 table local',
          'ip route del local 127.0.0.1 table local',
          'ip addr del 127.0.0.1/8 dev lo',
          'ip route add 127.0.0.1/32 via 10.0.2.2 dev eth2',
        ].join(' && '),
      ),
    );
    assert.equal(await dial('127.0.0.1'), 'closed');
  });

  it('sleep ends the relay, wake brings it back, and destroy leaves none', async () => {
    assert.equal((await fleet.sleep(PATH)).state, 'Sleeping');
    assert.deepEqual(relays(folder), []);
    assert.equal((await fleet.wake(PATH)).state, 'Running');
    assert.equal(relays(folder).length, 1);
    assert.equal(await dial('10.0.2.2'), 'closed');
    await fleet.destroy(PATH);
    assert.deepEqual(relays(folder), []);
  });
});

// A fleet tenant with outbound access: its instance has a way out (eth2, a route, passt behind
// a relay of vmkit's) but reaches no service on the host's loopback, not even when the guest's
// root routes 127.0.0.1 out; the relay and passt live exactly as long as the instance's VMM.
// Every address aimed at is this machine's (the host's loopback, the NIC's gateway).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Fleet } from '../../src/fleet/fleet.js';
import { instanceDir } from '../../src/fleet/vm.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { lacks } from '../helpers.js';

const dir = mkdtempSync('/tmp/vmkit-fob-');
const sh = (script: string) => ['sh', '-c', script];
const PATH = 'out/box/o1';

/** The relay of the instance's folder (QEMU names its socket too), and the passt it runs. */
function outboundProcesses(folder: string): { relays: number[]; passts: number[] } {
  const relays = processesNaming(join(folder, 'out.sock'))
    .map((record) => record.pid)
    .filter((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('outbound/host'));
  const parentOf = (pid: string) => {
    try {
      return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]);
    } catch {
      return undefined;
    }
  };
  const passts = readdirSync('/proc')
    .filter((pid) => /^\d+$/.test(pid) && relays.includes(parentOf(pid) ?? -1))
    .map(Number);
  return { relays, passts };
}

describe('fleet outbound access and the host', { skip: lacks('snapshot') }, () => {
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

  it('has a way out on eth2, and a relay with passt beside its VMM', async () => {
    const routes = (await fleet.exec(PATH, sh('ip route'))).stdout.toString();
    assert.match(routes, /^default via 10\.0\.2\.2 dev eth2/m);
    const { relays, passts } = outboundProcesses(folder);
    assert.equal(relays.length, 1);
    assert.equal(passts.length, 1);
    assert.match(readFileSync(`/proc/${passts[0]}/cmdline`, 'utf8'), /passt.*--no-map-gw/);
    if (process.getuid?.() === 0) {
      const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${relays[0]}/status`, 'utf8'))?.[1];
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

  it('sleep ends the relay and passt, wake brings them back, and destroy leaves none', async () => {
    assert.equal((await fleet.sleep(PATH)).state, 'Sleeping');
    assert.deepEqual(outboundProcesses(folder), { relays: [], passts: [] });
    assert.equal((await fleet.wake(PATH)).state, 'Running');
    assert.equal(outboundProcesses(folder).relays.length, 1);
    assert.equal(await dial('10.0.2.2'), 'closed');
    await fleet.destroy(PATH);
    assert.deepEqual(outboundProcesses(folder), { relays: [], passts: [] });
  });
});

// Machines on a switch, and a machine's own NIC to the host: links, port forwards, named host
// services, and no route out unless asked. Every address a guest or the test aims at is on this
// machine (the guests, or the host's loopback through user-mode networking).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  ConfigError,
  type Machine,
  readPcap,
  removeSnapshot,
  startMachine,
  VirtualSwitch,
} from '../../src/index.js';
import { runTool as run } from '../../src/util/exec.js';
import { which } from '../../src/util/which.js';
import { lacks } from '../helpers.js';

/** A one-line HTTP server on the host's loopback; resolves with its port. */
async function httpServer(body: string): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    socket.once('data', () => socket.end(`HTTP/1.0 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address && typeof address === 'object');
  return { server, port: address.port };
}

/** GET http://127.0.0.1:port/ from the host. */
function fetchFromHost(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', timeout: 10_000 }, (res) => {
      let text = '';
      res.on('data', (chunk) => {
        text += chunk;
      });
      res.on('end', () => resolve(text));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe('networks', { skip: lacks('hostNetwork') }, () => {
  let scratch: string;
  let lan: VirtualSwitch;
  let a: Machine;
  let b: Machine;
  let service: { server: Server; port: number };
  let unnamed: { server: Server; port: number };

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vmkit-net-'));
    lan = await VirtualSwitch.create('lan', join(scratch, 'lan.sock'));
    service = await httpServer('from the host service');
    unnamed = await httpServer('must not be reachable');
    [a, b] = await Promise.all([
      startMachine({
        name: 'a',
        networks: [{ switch: lan, address: '10.1.0.1/24' }],
        hostServices: { api: service.port },
      }),
      startMachine({ name: 'b', networks: [{ switch: lan, address: '10.1.0.2/24' }] }),
    ]);
  });

  after(async () => {
    await Promise.allSettled([a?.close(), b?.close()]);
    await lan?.close();
    service?.server.close();
    unnamed?.server.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('tells which switch, MAC and address each NIC has', () => {
    assert.deepEqual(
      a.networks.map(({ index, switch: sw, address }) => ({ index, sw, address })),
      [{ index: 0, sw: 'lan', address: '10.1.0.1/24' }],
    );
    assert.match(a.networks[0]?.mac ?? '', /^52:54(:[0-9a-f]{2}){4}$/);
  });

  it('block() cuts a machine off its switch and unblock() brings it back', async () => {
    await a.succeed('ping -c 1 -W 2 10.1.0.2');
    await a.block();
    await a.fail('ping -c 1 -W 2 10.1.0.2');
    await a.unblock();
    await a.waitUntilSucceeds('ping -c 1 -W 1 10.1.0.2', { timeoutMs: 20_000 });
  });

  it('forwardPort reaches a guest web server from the host, and close() ends it', async () => {
    await b.succeed('mkdir -p /www && echo guest-page > /www/index.html && httpd -p 8080 -h /www');
    await b.waitForOpenPort(8080);
    const forward = await b.forwardPort({ guestPort: 8080 });
    assert.ok(forward.hostPort > 0);
    assert.match(await fetchFromHost(forward.hostPort), /guest-page/);
    await assert.rejects(b.forwardPort({ hostPort: forward.hostPort, guestPort: 8080 }), (error: Error) => {
      assert.ok(error instanceof ConfigError, String(error));
      assert.match(error.message, new RegExp(`host port ${forward.hostPort} is already taken`));
      return true;
    });
    await forward.close();
    await assert.rejects(fetchFromHost(forward.hostPort));
    await assert.rejects(
      b.forwardPort({ guestPort: 70000 }),
      /guestPort: must be a whole number from 1 to 65535/,
    );
  });

  it('a named host service is reachable by name; other host ports are not', async () => {
    assert.match(
      await a.succeed(`timeout 10 wget -q -O - http://api:${service.port}/`),
      /from the host service/,
    );
    await a.fail(`timeout 5 wget -q -O - http://10.0.2.2:${unnamed.port}/`);
  });

  it('without internet: true the guest has no route out', async () => {
    const routes = await a.succeed('ip route');
    assert.doesNotMatch(routes, /^default/m, routes);
  });

  it('a partition cuts the pair apart and heal() joins it again', async () => {
    const cut = lan.partition([[a], [b]]);
    try {
      await a.fail('ping -c 2 -W 1 10.1.0.2');
    } finally {
      cut.remove();
    }
    await a.waitUntilSucceeds('ping -c 1 -W 1 10.1.0.2', { timeoutMs: 20_000 });
  });

  it('30% loss and 50 ms delay show in ping, and heal() removes them', async () => {
    lan.impair({ lossPercent: 30, delayMs: 50, seed: 7 });
    try {
      const out = await a.succeed('ping -c 40 -i 0.1 -W 2 -q 10.1.0.2 || true', { timeoutMs: 60_000 });
      const loss = Number(/(\d+)% packet loss/.exec(out)?.[1]);
      // Each direction loses 30%: a round trip survives 0.7 * 0.7 = 49% of the time.
      assert.ok(loss >= 25 && loss <= 80, `loss ${loss}%:\n${out}`);
      const avg = Number(/= [\d.]+\/([\d.]+)\//.exec(out)?.[1]);
      assert.ok(avg >= 95, `a 50 ms delay each way makes round trips of 100 ms or more: ${avg} ms`);
    } finally {
      lan.heal();
    }
    const clean = await a.succeed('ping -c 5 -i 0.2 -q 10.1.0.2');
    assert.match(clean, / 0% packet loss/);
  });

  it('captures the VLAN to a pcap file that reads back (and that tcpdump reads)', async () => {
    const path = join(scratch, 'lan.pcap');
    const capture = await lan.capture(path);
    await a.succeed('ping -c 3 -i 0.2 10.1.0.2');
    await capture.stop();
    const { linkType, records } = readPcap(await readFile(path));
    assert.equal(linkType, 1);
    const icmp = records.filter(({ frame }) => frame.readUInt16BE(12) === 0x0800 && frame[23] === 1);
    assert.ok(
      icmp.length >= 6,
      `3 echo requests and 3 replies, got ${icmp.length} ICMP frames of ${records.length}`,
    );
    const now = Date.now();
    assert.ok(
      icmp.every(({ timeMs }) => Math.abs(now - timeMs) < 120_000),
      'real timestamps',
    );
    assert.ok(await which('tcpdump'), 'tcpdump reads the capture back: scripts/setup.sh installs it');
    const { stdout } = await run('tcpdump', ['-r', path, '-n', 'icmp']);
    assert.match(stdout, /10\.1\.0\.1 > 10\.1\.0\.2: ICMP echo request/);
  });
  it('duplication shows as DUP! in ping, and reordering as replies out of sequence', async () => {
    const dup = lan.impair({ from: 'b', duplicatePercent: 100 });
    try {
      const out = await a.succeed('ping -c 3 -i 0.2 10.1.0.2');
      assert.match(out, /DUP!/, out);
    } finally {
      dup.remove();
    }
    lan.impair({ reorderPercent: 50, seed: 3 });
    try {
      const out = await a.succeed('ping -c 20 -i 0.02 -W 2 10.1.0.2 || true', { timeoutMs: 30_000 });
      const seqs = [...out.matchAll(/seq=(\d+)/g)].map((match) => Number(match[1]));
      assert.ok(
        seqs.some((seq, i) => i > 0 && seq < (seqs[i - 1] ?? 0)),
        `a reply overtaken by a later one:\n${out}`,
      );
    } finally {
      lan.heal();
    }
  });

  it('a rate cap slows a transfer to about the cap', async () => {
    await b.succeed('mkdir -p /www && dd if=/dev/zero of=/www/big bs=1k count=100 2>/dev/null');
    await b.succeed('httpd -p 8090 -h /www');
    await b.waitForOpenPort(8090);
    const uptime = "cut -d' ' -f1 /proc/uptime";
    const fetchSeconds = async () => {
      const out = await a.succeed(
        `s=$(${uptime}); wget -q -O /dev/null http://10.1.0.2:8090/big; e=$(${uptime}); echo "$s $e"`,
        { timeoutMs: 60_000 },
      );
      const [start = 0, end = 0] = out.trim().split(' ').map(Number);
      return end - start;
    };
    const free = await fetchSeconds();
    const capKbps = 400;
    lan.impair({ rateKbps: capKbps });
    let capped: number;
    try {
      capped = await fetchSeconds();
    } finally {
      lan.heal();
    }
    const kbps = (100 * 1024 * 8) / 1000 / capped;
    assert.ok(
      kbps <= capKbps * 1.2 && kbps >= capKbps * 0.4,
      `100 KiB took ${capped} s capped (${kbps.toFixed(0)} kbit/s) and ${free} s free`,
    );
    assert.ok(capped > free * 3, `capped ${capped} s against free ${free} s`);
  });

  it('clones of a machine on its own LAN get distinct MACs and free addresses', async () => {
    // One echo may be lost under load (CI's ordinary-user run lost one from a to a clone): up to three.
    const pingAnswered = (address: string) =>
      `ping -c 1 -W 2 ${address} || ping -c 1 -W 2 ${address} || ping -c 1 -W 2 ${address}`;
    const snapshot = await a.snapshot();
    const clones = await snapshot.fork(2, { networks: [{ switch: lan }] });
    try {
      // Each clone claims a free address as it joins the switch: which clone is first varies.
      const addresses = clones.map((clone) => clone.networks[0]?.address).sort();
      assert.deepEqual(addresses, ['10.1.0.3/24', '10.1.0.4/24']);
      const macs = new Set([a, ...clones].map((m) => m.networks[0]?.mac));
      assert.equal(macs.size, 3, 'three distinct MACs');
      for (const clone of clones) {
        assert.match(
          await clone.succeed('ip -4 addr show eth0'),
          new RegExp(clone.networks[0]?.address ?? '-'),
        );
        await clone.succeed(pingAnswered('10.1.0.2'));
      }
      await clones[0]?.succeed(pingAnswered('10.1.0.4'));
      await a.succeed(pingAnswered('10.1.0.3'));
      // A reboot resets the NIC to its device's MAC (the source's): the clone's own is set again.
      const clone = clones[0] as Machine;
      await clone.reboot({ timeoutMs: 120_000 });
      assert.match(
        await clone.succeed('cat /sys/class/net/eth0/address'),
        new RegExp(clone.networks[0]?.mac ?? '-'),
      );
      await clone.succeed(pingAnswered('10.1.0.2'));

      // A clone given an address gets it; a fork whose clones cannot all start leaves none running.
      const [placed] = await snapshot.fork(1, {
        names: ['placed'],
        networks: [{ switch: lan, address: '10.1.0.9/24' }],
      });
      try {
        assert.equal(placed?.networks[0]?.address, '10.1.0.9/24');
        assert.match(await (placed as Machine).succeed('ip -4 addr show eth0'), /10\.1\.0\.9\/24/);
      } finally {
        await placed?.close();
      }
      await assert.rejects(
        snapshot.fork(2, {
          names: ['twin-1', 'twin-2'],
          networks: [{ switch: lan, address: '10.1.0.9/24' }],
        }),
        /address 10\.1\.0\.9 of machine twin-\d is already used by machine twin-\d/,
      );
      const twins = readdirSync('/proc').filter((pid) => {
        try {
          return /-name\0twin-\d\0/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
        } catch {
          return false;
        }
      });
      assert.deepEqual(twins, [], 'the clone that started was closed with the fork');
    } finally {
      await Promise.allSettled(clones.map((clone) => clone.close()));
      await removeSnapshot(snapshot);
    }
  });
});

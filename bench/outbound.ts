// Outbound benchmark: what the NIC out costs now (the guest's NIC -> vmkit's filtering relay ->
// QEMU's user-mode network, restrict=off) against that user-mode network alone (what internet:
// true was). Run it as root with `npm run bench:outbound` (add `-- --iterations N`).
//
// Nothing outside this machine is aimed at. The sink is a node server in a network namespace of
// this run joined to the host by a veth pair (198.18.0.2, the host side 198.18.0.1): an address
// beyond the host, which both paths reach through the host's stack. slirp alone also gets a sink
// on the host's loopback (its host address), the way it reached the host before; the relay
// refuses that.
//
// Paths, each a tiny-image machine kept up for the run, measured in turn, the others paused:
//   relay          internet: true: eth1 10.0.3.15, default route via 10.0.3.2;
//   slirp          qemuArgs: a second user-mode NIC with restrict=off (eth1, 10.0.9.15/24,
//                  198.18.0.0/30 via 10.0.9.2);
//   slirp-loopback the same machine, to 10.0.9.2 (the host's 127.0.0.1).
// Measured in the guest (/proc/uptime, 10 ms steps): MiB of zeros sent by busybox nc to a sink
// that closes once it has them all; and sequential connections to a sink that answers and closes.
// Progress goes to stderr, one JSON object to stdout.

import { execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { type Machine, startMachine } from 'vmkit';
import {
  adoptMachine,
  closeMachine,
  describeEnvironment,
  environment,
  log,
  median,
  onCleanup,
  parseIntOptions,
  ratio,
  round,
  runBenchmark,
} from './lib.js';

const USAGE = `Usage: npm run --silent bench:outbound -- [options]   (as root: it makes a network namespace)

Options:
  --iterations N   samples of each path (default 3)
  --mib N          MiB per throughput sample (default 32)
  --connects N     connections per connect sample (default 50)
  -h, --help       print this help
`;

const NS = `vmkit-bench-${process.pid}`;
const SINK = '198.18.0.2';
const BULK_PORT = 5101;
const HELLO_PORT = 5102;

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'inherit'] });

/** A namespace with a veth to the host and, in it, the two sinks (node, one process). */
async function makeSink(bytes: number): Promise<() => void> {
  ip('netns', 'add', NS);
  const veth = `vb${process.pid % 100000}`;
  ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}n`, 'netns', NS);
  ip('addr', 'add', '198.18.0.1/30', 'dev', veth);
  ip('link', 'set', veth, 'up');
  ip('-n', NS, 'addr', 'add', `${SINK}/30`, 'dev', `${veth}n`);
  ip('-n', NS, 'link', 'set', `${veth}n`, 'up');
  ip('-n', NS, 'link', 'set', 'lo', 'up');
  ip('-n', NS, 'route', 'add', 'default', 'via', '198.18.0.1');
  const script = `
    const net = require('node:net');
    net.createServer((s) => { let n = 0; s.on('data', (c) => { n += c.length; if (n >= ${bytes}) s.end(); }); s.on('error', () => {}); }).listen(${BULK_PORT}, '${SINK}');
    net.createServer((s) => { s.on('error', () => {}); s.end('hi\\n'); }).listen(${HELLO_PORT}, '${SINK}', () => console.log('up'));`;
  const sink = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve) => sink.stdout?.once('data', () => resolve()));
  // Runs at the end and again at exit: quietly once they are gone.
  const quietly = (...args: string[]) => execFileSync('ip', args, { stdio: 'ignore' });
  return () => {
    sink.kill('SIGKILL');
    try {
      quietly('link', 'del', veth);
    } catch {}
    try {
      quietly('netns', 'del', NS);
    } catch {}
  };
}

/** The same two sinks on the host's loopback, for slirp's old way to the host. */
async function loopbackSinks(bytes: number): Promise<{ bulk: number; hello: number; close: () => void }> {
  const bulk = createServer((s) => {
    let n = 0;
    s.on('data', (c) => {
      n += c.length;
      if (n >= bytes) s.end();
    });
    s.on('error', () => {});
  });
  const hello = createServer((s) => {
    s.on('error', () => {});
    s.end('hi\n');
  });
  await Promise.all(
    [bulk, hello].map((server) => new Promise<void>((r) => server.listen(0, '127.0.0.1', r))),
  );
  const port = (server: typeof bulk) => (server.address() as { port: number }).port;
  return {
    bulk: port(bulk),
    hello: port(hello),
    close: () => {
      bulk.close();
      hello.close();
    },
  };
}

const uptime = `cut -d' ' -f1 /proc/uptime`;

/** MB/s of `mib` MiB sent to address:port, timed in the guest. */
async function throughput(machine: Machine, address: string, port: number, mib: number): Promise<number> {
  const out = await machine.succeed(
    `a=$(${uptime}); dd if=/dev/zero bs=64k count=${mib * 16} 2>/dev/null | timeout 120 nc ${address} ${port} >/dev/null; b=$(${uptime}); echo "$a $b"`,
    { timeoutMs: 150_000 },
  );
  const [a, b] = out.trim().split(' ').map(Number);
  return round((mib * 1.048576) / ((b as number) - (a as number)));
}

/** Connections a second to address:port, one after another, timed in the guest. */
async function connects(machine: Machine, address: string, port: number, count: number): Promise<number> {
  const out = await machine.succeed(
    `a=$(${uptime}); i=0; while [ $i -lt ${count} ]; do timeout 5 nc ${address} ${port} </dev/null >/dev/null; i=$((i+1)); done; b=$(${uptime}); echo "$a $b"`,
    { timeoutMs: 150_000 },
  );
  const [a, b] = out.trim().split(' ').map(Number);
  return round(count / ((b as number) - (a as number)));
}

await runBenchmark(async () => {
  const options = parseIntOptions(USAGE, {
    iterations: { default: 3 },
    mib: { default: 32 },
    connects: { default: 50 },
  });
  if (!options) return;
  if (process.getuid?.() !== 0)
    throw new Error('run it as root: it makes a network namespace and a veth pair');
  const bytes = options.mib * 2 ** 20;
  const removeSink = await makeSink(bytes);
  onCleanup(removeSink);
  const loopback = await loopbackSinks(bytes);
  onCleanup(loopback.close);
  const env = await environment();
  log('booting the two machines');
  const [relay, slirp] = await Promise.all([
    startMachine({ name: 'relay', internet: true }).then(adoptMachine),
    startMachine({
      name: 'slirp',
      qemuArgs: ['-netdev', 'user,id=sl,net=10.0.9.0/24,restrict=off', '-device', 'virtio-net-pci,netdev=sl'],
    }).then(adoptMachine),
  ]);
  await slirp.succeed(
    'ip link set eth1 up && ip addr add 10.0.9.15/24 dev eth1 && ip route add 198.18.0.0/30 via 10.0.9.2',
  );
  const paths: Array<[string, Machine, string, number, number]> = [
    ['relay', relay, SINK, BULK_PORT, HELLO_PORT],
    ['slirp', slirp, SINK, BULK_PORT, HELLO_PORT],
    ['slirp-loopback', slirp, '10.0.9.2', loopback.bulk, loopback.hello],
  ];
  const samples = new Map(paths.map(([name]) => [name, { mbps: [] as number[], connects: [] as number[] }]));
  for (let i = 0; i < options.iterations; i++) {
    for (const [name, machine, address, bulk, hello] of paths) {
      const other = machine === relay ? slirp : relay;
      await other.qmp.execute('stop');
      try {
        const sample = samples.get(name);
        sample?.mbps.push(await throughput(machine, address, bulk, options.mib));
        sample?.connects.push(await connects(machine, address, hello, options.connects));
        log(`${name}: ${sample?.mbps.at(-1)} MB/s, ${sample?.connects.at(-1)} connects/s`);
      } finally {
        await other.qmp.execute('cont');
      }
    }
  }
  const result = Object.fromEntries(
    [...samples].map(([name, s]) => [
      name,
      { mbps: median(s.mbps), connectsPerSecond: median(s.connects), samples: s },
    ]),
  );
  const relayResult = result.relay as { mbps: number; connectsPerSecond: number };
  const slirpResult = result.slirp as { mbps: number; connectsPerSecond: number };
  process.stdout.write(
    `${JSON.stringify(
      {
        benchmark: 'outbound',
        environment: describeEnvironment(env),
        options,
        paths: result,
        ratios: {
          throughputRelayToSlirp: ratio(relayResult.mbps, slirpResult.mbps),
          connectsRelayToSlirp: ratio(relayResult.connectsPerSecond, slirpResult.connectsPerSecond),
        },
      },
      null,
      2,
    )}\n`,
  );
  await Promise.all([closeMachine(relay), closeMachine(slirp)]);
});

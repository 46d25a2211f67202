// Network benchmark: guest-to-guest TCP throughput and round-trip time through vmkit's
// VirtualSwitch against the same two guests joined point to point by QEMU alone. Run it with
// `npm run bench:network` (add `-- --iterations N`).
//
// Links, each between two tiny-image machines started by startMachine() and kept up for the run:
//   switch  vmkit's switch: networks: [{ switch, address }] on one VirtualSwitch in this process
//           (10.0.0.1/24 and 10.0.0.2/24); every frame passes through the switch's unix socket
//           server in Node;
//   direct  no vmkit in the path: no `networks`, but qemuArgs adding a virtio-net NIC on a
//           `-netdev stream` unix socket, server on machine 1, client on machine 2 (10.0.1.1/24 and
//           10.0.1.2/24, configured in the guests); QEMU to QEMU, nothing in between.
// Both use the same NIC model and netdev type (stream, no vnet header), so what differs is the
// switch. Every machine also has vmkit's NIC to the host (user-mode); it carries nothing here.
//
// Measured, alternating switch, direct, switch, direct, ... after warm-up pairs; the pair not
// being measured is paused (QMP stop) so that its idle guests take no CPU from the other:
//   throughput  machine 2 listens with busybox nc; machine 1 sends N MiB of zeros from dd through
//               nc. Timed in the guest (busybox date has no %N: /proc/uptime, 10 ms steps) from
//               before dd starts until nc exits, which is after the receiver has read everything
//               and closed; the receiver counts the bytes it got.
//   round trip  busybox ping -c N -i 0.2 -q from machine 1; its average.
//
// Progress goes to stderr, one JSON object to stdout.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Machine, type MachineOptions, startMachine, VirtualSwitch } from 'vmkit';
import {
  adoptMachine,
  BOOT_TIMEOUT_MS,
  CPUS,
  closeMachine,
  describeEnvironment,
  environment,
  hostCpus,
  loadAverages,
  log,
  MEMORY_MIB,
  median,
  onCleanup,
  parseIntOptions,
  ratio,
  round,
  runBenchmark,
} from './lib.js';
import {
  listenerScript,
  parseSender,
  RECEIVED_FILE,
  sampleLimitSeconds,
  senderScript,
  THROUGHPUT_PORT,
} from './tcp-throughput.js';

const USAGE = `Usage: npm run --silent bench:network -- [options]   (--silent keeps npm's banner off stdout)
       node --import tsx bench/network.ts [options]            (after npm run build)

Guest-to-guest TCP throughput and ping round trip between two machines, through vmkit's
VirtualSwitch ("switch") and through a QEMU stream netdev joining the two QEMUs directly
("direct"), alternating switch, direct, switch, direct, ... Progress on stderr, JSON on stdout.

Options:
  --iterations N    switch/direct pairs to measure (default 3)
  --warmup N        unmeasured switch/direct pairs before measuring (default 1)
  --mib N           MiB sent per throughput sample (default 16)
  --pings N         pings per round-trip sample, 0.2 s apart (default 20)
  -h, --help        print this help
`;

const PORT = THROUGHPUT_PORT;
const PING_INTERVAL_S = 0.2;
/** The direct link's NICs: the guest finds its NIC by this MAC prefix. */
const DIRECT_MAC_PREFIX = '52:54:00:dd:00:0';
/** The target this benchmark checks: the switch keeps at least this share of direct throughput. */
const TARGET_THROUGHPUT_RATIO = 0.9;
const TARGET = 'the switch costs at most 10% of throughput against the direct link';
/** Bound of short guest commands (setup, listener start, reading a count). */
const SHORT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// Cleanup of what only this benchmark makes: the scratch folder of the sockets, and the switch
// (machines are closed by lib.ts).

let scratchDir: string | undefined;
let theSwitch: VirtualSwitch | undefined;

onCleanup(() => {
  if (scratchDir) rmSync(scratchDir, { recursive: true, force: true });
  scratchDir = undefined;
});

async function closeSwitch(): Promise<void> {
  const sw = theSwitch;
  theSwitch = undefined;
  await sw?.close();
}

// ---------------------------------------------------------------------------------------------
// Machines

type LinkName = 'switch' | 'direct';

interface Pair {
  link: LinkName;
  sender: Machine;
  receiver: Machine;
  /** The receiver's address on this link. */
  target: string;
  paused: boolean;
}

const machineOptions = (name: string): MachineOptions => ({
  name,
  image: 'tiny',
  memoryMiB: MEMORY_MIB,
  cpus: CPUS,
  accel: 'auto',
  timeoutMs: BOOT_TIMEOUT_MS,
  commandTimeoutMs: SHORT_MS,
});

/** Starts machines together; every one that started is adopted (closed later) even if another fails. */
async function startAll(options: MachineOptions[]): Promise<Machine[]> {
  const results = await Promise.allSettled(options.map((o) => startMachine(o)));
  const machines: Machine[] = [];
  for (const result of results) if (result.status === 'fulfilled') machines.push(adoptMachine(result.value));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return machines;
}

/** The QEMU arguments of one end of the direct link (`index` 1 is the server, 2 the client). */
function directArgs(socketPath: string, index: 1 | 2): string[] {
  const server = index === 1 ? 'on' : 'off';
  return [
    '-netdev',
    `stream,id=direct,server=${server},addr.type=unix,addr.path=${socketPath.replaceAll(',', ',,')}`,
    '-device',
    `virtio-net-pci,netdev=direct,mac=${DIRECT_MAC_PREFIX}${index}`,
  ];
}

/** Finds the direct link's NIC in the guest by its MAC and gives it `address`. */
async function configureDirectNic(machine: Machine, index: 1 | 2, address: string): Promise<string> {
  const mac = `${DIRECT_MAC_PREFIX}${index}`;
  const line = await machine.succeed(`ip -o link | grep -i ${mac}`);
  const device = /^\d+:\s*([^:@\s]+)/.exec(line.trim())?.[1];
  if (!device) throw new Error(`${machine.name}: no NIC with MAC ${mac} in: ${line}`);
  await machine.succeed(`ip link set ${device} up && ip addr add ${address} dev ${device}`);
  return device;
}

async function startPairs(dir: string): Promise<{ switched: Pair; direct: Pair; directDevices: string[] }> {
  theSwitch = await VirtualSwitch.create('bench-net', join(dir, 'sw.sock'));
  const sw = theSwitch;
  const directSocket = join(dir, 'direct.sock');
  log('starting 4 machines: the switch pair and the direct link server, then the direct link client');
  // The direct link's server QEMU listens without waiting for its client, so startMachine() of
  // machine 1 resolves on its own; machine 2's QEMU connects at start, so it comes after.
  const [sw1, sw2, dx1] = await startAll([
    { ...machineOptions('net-sw-1'), networks: [{ switch: sw, address: '10.0.0.1/24' }] },
    { ...machineOptions('net-sw-2'), networks: [{ switch: sw, address: '10.0.0.2/24' }] },
    { ...machineOptions('net-dx-1'), qemuArgs: directArgs(directSocket, 1) },
  ]);
  const [dx2] = await startAll([{ ...machineOptions('net-dx-2'), qemuArgs: directArgs(directSocket, 2) }]);
  if (!sw1 || !sw2 || !dx1 || !dx2) throw new Error('a machine is missing');
  const directDevices = [
    await configureDirectNic(dx1, 1, '10.0.1.1/24'),
    await configureDirectNic(dx2, 2, '10.0.1.2/24'),
  ];
  const switched: Pair = { link: 'switch', sender: sw1, receiver: sw2, target: '10.0.0.2', paused: false };
  const direct: Pair = { link: 'direct', sender: dx1, receiver: dx2, target: '10.0.1.2', paused: false };
  for (const pair of [switched, direct]) {
    // Bounded: the first ping also resolves the peer's MAC.
    await pair.sender.waitUntilSucceeds(`ping -c 1 -W 1 ${pair.target}`, { timeoutMs: SHORT_MS });
    log(`${pair.link}: ${pair.sender.name} reaches ${pair.target}`);
  }
  return { switched, direct, directDevices };
}

async function setPaused(pair: Pair, paused: boolean): Promise<void> {
  if (pair.paused === paused) return;
  await Promise.all([pair.sender, pair.receiver].map((m) => m.qmp.execute(paused ? 'stop' : 'cont')));
  pair.paused = paused;
}

// ---------------------------------------------------------------------------------------------
// Measurements

interface ThroughputSample {
  mbitPerSecond: number;
  /** Sender's time in the guest, dd start to nc exit (10 ms resolution). */
  guestSeconds: number;
  /** The execute() call on the host around it. */
  hostMs: number;
  receivedBytes: number;
}

async function measureThroughput(pair: Pair, bytes: number): Promise<ThroughputSample> {
  const { sender, receiver, target } = pair;
  const limitS = sampleLimitSeconds(bytes);
  await receiver.succeed(listenerScript(limitS));
  await receiver.waitForOpenPort(PORT, { timeoutMs: SHORT_MS });

  const began = performance.now();
  const result = await sender.execute(senderScript(target, bytes, limitS), {
    timeoutMs: (limitS + 30) * 1000,
  });
  const hostMs = performance.now() - began;
  const sent = parseSender(result.stdout);
  if (result.exitCode !== 0 || !sent || sent.status !== 0) {
    throw new Error(
      `${pair.link}: sending to ${target}:${PORT} failed (exit ${result.exitCode}, nc status ${sent?.status}): ${result.stdout}${result.stderr}`,
    );
  }
  const { start, end } = sent;
  await receiver.waitForFile(RECEIVED_FILE, { timeoutMs: SHORT_MS });
  const receivedBytes = Number((await receiver.succeed(`cat ${RECEIVED_FILE}`)).trim());
  // Fall back to the host's time only if the guest's clock gave nothing usable.
  const guestSeconds = end > start ? end - start : hostMs / 1000;
  return {
    mbitPerSecond: round((receivedBytes * 8) / guestSeconds / 1e6),
    guestSeconds: Math.round(guestSeconds * 100) / 100,
    hostMs: round(hostMs),
    receivedBytes,
  };
}

interface RttSample {
  avgMs: number;
  minMs: number;
  maxMs: number;
  transmitted: number;
  received: number;
}

async function measureRtt(pair: Pair, pings: number): Promise<RttSample> {
  const command = `ping -c ${pings} -i ${PING_INTERVAL_S} -W 2 -q ${pair.target}`;
  const result = await pair.sender.execute(command, {
    timeoutMs: Math.ceil(pings * PING_INTERVAL_S + 30) * 1000,
  });
  const counts = /(\d+) packets transmitted, (\d+) packets received/.exec(result.stdout);
  const times = /min\/avg\/max = ([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(result.stdout);
  if (!counts || !times) {
    throw new Error(
      `${pair.link}: ${command} gave no statistics (exit ${result.exitCode}): ${result.stdout}${result.stderr}`,
    );
  }
  return {
    avgMs: Number(times[2]),
    minMs: Number(times[1]),
    maxMs: Number(times[3]),
    transmitted: Number(counts[1]),
    received: Number(counts[2]),
  };
}

interface LinkSamples {
  throughput: ThroughputSample[];
  rtt: RttSample[];
}

async function measureLink(pair: Pair, other: Pair, bytes: number, pings: number, label: string) {
  await setPaused(other, true);
  await setPaused(pair, false);
  const throughput = await measureThroughput(pair, bytes);
  const rtt = await measureRtt(pair, pings);
  const lost = rtt.transmitted - rtt.received;
  const short =
    throughput.receivedBytes === bytes ? '' : `; INCOMPLETE: ${throughput.receivedBytes} bytes arrived`;
  log(
    `${label} ${pair.link.padEnd(6)}: ${throughput.mbitPerSecond} Mbit/s (${throughput.guestSeconds} s in the guest, ` +
      `${throughput.hostMs} ms on the host${short}); ping avg ${rtt.avgMs} ms` +
      (lost ? ` (${lost}/${rtt.transmitted} lost)` : ''),
  );
  return { throughput, rtt };
}

function summarize(samples: LinkSamples, bytes: number) {
  const mbit = samples.throughput.map((s) => s.mbitPerSecond);
  const rtt = samples.rtt.map((s) => s.avgMs);
  // lib's median() rounds to 0.1: take it in microseconds to keep ping's three decimals.
  const medianRttMs = median(rtt.map((ms) => ms * 1000)) / 1000;
  return {
    throughput: {
      samplesMbitPerSecond: mbit,
      medianMbitPerSecond: median(mbit),
      /** (max - min) / median: how far apart the samples are, against the ratio of the medians. */
      spreadPercent: round(((Math.max(...mbit) - Math.min(...mbit)) / median(mbit)) * 100),
      guestSeconds: samples.throughput.map((s) => s.guestSeconds),
      hostSamplesMs: samples.throughput.map((s) => s.hostMs),
      receivedBytes: samples.throughput.map((s) => s.receivedBytes),
      complete: samples.throughput.every((s) => s.receivedBytes === bytes),
    },
    rtt: {
      samplesAvgMs: rtt,
      medianAvgMs: medianRttMs,
      samplesMinMs: samples.rtt.map((s) => s.minMs),
      samplesMaxMs: samples.rtt.map((s) => s.maxMs),
      lost: samples.rtt.reduce((total, s) => total + s.transmitted - s.received, 0),
    },
  };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const options = parseIntOptions(USAGE, {
    iterations: { default: 3 },
    warmup: { default: 1, min: 0 },
    mib: { default: 16 },
    pings: { default: 20 },
  });
  if (!options) return;
  const { iterations, warmup, mib, pings } = options;
  const bytes = mib * 1024 * 1024;

  const date = new Date().toISOString();
  const env = await environment();
  const { imageLookupMs } = env;

  scratchDir = mkdtempSync(join(tmpdir(), 'vmkit-bench-net-'));
  const { switched, direct, directDevices } = await startPairs(scratchDir);
  log(
    `${warmup} warm-up pair(s), then ${iterations} measured pair(s), alternating switch and direct; ` +
      `${mib} MiB per transfer, ${pings} pings per round-trip sample`,
  );

  const samples: Record<LinkName, LinkSamples> = {
    switch: { throughput: [], rtt: [] },
    direct: { throughput: [], rtt: [] },
  };
  for (let i = 0; i < warmup + iterations; i++) {
    const measured = i >= warmup;
    const label = measured ? `pair ${i - warmup + 1}/${iterations}` : `warm-up ${i + 1}/${warmup}`;
    for (const [pair, other] of [
      [switched, direct],
      [direct, switched],
    ] as const) {
      const sample = await measureLink(pair, other, bytes, pings, label);
      if (measured) {
        samples[pair.link].throughput.push(sample.throughput);
        samples[pair.link].rtt.push(sample.rtt);
      }
    }
  }
  const framesForwarded = theSwitch?.framesForwarded ?? 0;
  await Promise.all([setPaused(switched, false), setPaused(direct, false)]);
  await Promise.all([switched, direct].flatMap((pair) => [pair.sender, pair.receiver]).map(closeMachine));
  await closeSwitch();

  const switchSummary = summarize(samples.switch, bytes);
  const directSummary = summarize(samples.direct, bytes);
  const throughputRatio = ratio(
    switchSummary.throughput.medianMbitPerSecond,
    directSummary.throughput.medianMbitPerSecond,
  );
  const rttRatio = ratio(switchSummary.rtt.medianAvgMs, directSummary.rtt.medianAvgMs);
  const met = throughputRatio >= TARGET_THROUGHPUT_RATIO;
  log(
    `throughput switch/direct ${throughputRatio} (target at least ${TARGET_THROUGHPUT_RATIO}: ${met ? 'met' : 'NOT met'}); ` +
      `round trip switch/direct ${rttRatio}`,
  );

  const report = {
    benchmark: 'network',
    date,
    ...describeEnvironment(env),
    host: {
      cpus: hostCpus(),
      loadavg: loadAverages(),
      node: process.version,
    },
    memoryMiB: MEMORY_MIB,
    cpus: CPUS,
    iterations,
    warmupPairs: warmup,
    transferBytes: bytes,
    pingsPerSample: pings,
    pingIntervalS: PING_INTERVAL_S,
    method: {
      throughput:
        'machine 1 to machine 2: dd if=/dev/zero bs=64k | nc into busybox nc -l | wc -c; Mbit/s from the bytes received over the time in the sending guest (/proc/uptime, 10 ms steps) from before dd to nc exit',
      rtt: `busybox ping -c ${pings} -i ${PING_INTERVAL_S} -q from machine 1; its avg, one sample per run`,
      order: 'switch, direct, switch, direct, ...; the pair not measured is paused (QMP stop)',
    },
    switch: {
      what: "startMachine({ networks: [{ switch, address }] }): virtio-net on a stream netdev into vmkit's VirtualSwitch (Node, unix socket)",
      addresses: ['10.0.0.1/24', '10.0.0.2/24'],
      framesForwarded,
      ...switchSummary,
    },
    direct: {
      what: 'qemuArgs: virtio-net on a stream netdev, machine 1 the unix-socket server, machine 2 the client; no vmkit in the path',
      addresses: ['10.0.1.1/24', '10.0.1.2/24'],
      guestDevices: directDevices,
      ...directSummary,
    },
    ratios: {
      throughputSwitchOverDirect: throughputRatio,
      rttSwitchOverDirect: rttRatio,
    },
    target: {
      statement: TARGET,
      throughputRatioAtLeast: TARGET_THROUGHPUT_RATIO,
      throughputRatio,
      met,
    },
    imageLookupMs,
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
}

await runBenchmark(main, closeSwitch);

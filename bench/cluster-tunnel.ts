// Tunnel throughput for bench/cluster.ts: TCP between two instances of one tenant on different
// nodes (through both nodes' switches and the tunnel between them, over the agents' mutual TLS)
// against two on the same node (through its switch alone), measured in the guests with busybox nc.

import { Fleet } from 'vmkit';
import { round } from './lib.js';
import {
  foregroundListenerScript,
  parseSender,
  retryingSenderScript,
  sampleLimitSeconds,
} from './tcp-throughput.js';

export interface Placed {
  path: string;
  node: string;
}

interface Sample {
  mbitPerSecond: number;
  guestSeconds: number;
}

/** Runs a script in an instance through its node's fleet. */
async function run(fleetDir: string, path: string, script: string, timeoutMs: number) {
  const fleet = new Fleet({ dir: fleetDir });
  try {
    return await fleet.exec(path, ['sh', '-c', script], timeoutMs);
  } finally {
    await fleet.close();
  }
}

/** Sends `bytes` from `sender` to `receiver` (at `address`); the rate as the sender's guest clock saw it. */
async function sample(
  fleetDirOf: (node: string) => string,
  sender: Placed,
  receiver: Placed & { address: string },
  bytes: number,
): Promise<Sample> {
  const limitS = sampleLimitSeconds(bytes);
  // A fleet's exec ends the command's background jobs with it: the receiver runs in a call of its
  // own, in the foreground, while the sender tries to connect until it listens.
  const receiving = run(
    fleetDirOf(receiver.node),
    receiver.path,
    foregroundListenerScript(limitS),
    (limitS + 60) * 1000,
  );
  receiving.catch(() => {});
  const sent = await run(
    fleetDirOf(sender.node),
    sender.path,
    retryingSenderScript(receiver.address, bytes, limitS),
    (limitS + 60) * 1000,
  );
  const times = parseSender(sent.stdout.toString());
  if (sent.status !== 0 || !times || times.status !== 0)
    throw new Error(`${sender.path} -> ${receiver.address}: sending failed: ${sent.stdout}${sent.stderr}`);
  const count = await receiving;
  const received = Number(count.stdout.toString().trim());
  if (count.status !== 0 || received !== bytes)
    throw new Error(
      `${receiver.path} received ${received} of ${bytes} bytes: ${count.stdout}${count.stderr}`,
    );
  const seconds = Math.max(times.end - times.start, 0.01);
  return { mbitPerSecond: round((bytes * 8) / seconds / 1e6), guestSeconds: round(seconds) };
}

/**
 * Throughput across nodes against within one node, alternated `samples` times (the same load on
 * both); undefined when the placement has no such pairs.
 */
export async function tunnelThroughput(
  placed: Placed[],
  addressOf: (path: string) => string,
  fleetDirOf: (node: string) => string,
  options: { mib: number; samples: number },
) {
  const [first] = placed;
  const acrossTo = placed.find((i) => i.node !== first?.node);
  const byNode = new Map<string, Placed[]>();
  for (const i of placed) byNode.set(i.node, [...(byNode.get(i.node) ?? []), i]);
  const local = [...byNode.values()].find((list) => list.length >= 2);
  if (!first || !acrossTo || !local) return undefined;
  const bytes = options.mib * 1024 * 1024;
  const across: Sample[] = [];
  const within: Sample[] = [];
  for (let n = 0; n < options.samples; n++) {
    across.push(await sample(fleetDirOf, first, { ...acrossTo, address: addressOf(acrossTo.path) }, bytes));
    const [from, to] = local as [Placed, Placed];
    within.push(await sample(fleetDirOf, from, { ...to, address: addressOf(to.path) }, bytes));
  }
  return {
    mibPerSample: options.mib,
    acrossNodes: { pair: [first, acrossTo], samples: across },
    oneNode: { pair: local.slice(0, 2), samples: within },
  };
}

import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { switchDaemonStats } from '../../network/switch-daemon.js';
import { withDefaults } from '../../util/options.js';
import { parseInput, wholeNumber } from '../../util/validate.js';
import type { FleetCore } from '../fleet-core.js';
import { instanceMemoryKiB } from '../node.js';
import type { Instance } from '../state/model.js';
import { instanceDir, networkDir, vmProcesses } from '../vmm/vm.js';

/** Thresholds of the sleep policy. */
export interface PolicyOptions {
  /** Running or Warm this long without a command, start or wake counts as idle. */
  idleSeconds: number;
  /** Below this share of one CPU over the sample, the VMM counts as quiet. */
  cpuPercent: number;
  /** Fewer bytes than this through the tenant switch over the sample count as quiet. */
  networkBytes: number;
  /** Below this much MemAvailable the host is under pressure: the coldest instances sleep first. */
  minMemAvailableMiB: number;
  /** How long CPU and network use are sampled. */
  sampleMs: number;
}

export const POLICY_DEFAULTS: PolicyOptions = {
  idleSeconds: 300,
  cpuPercent: 5,
  networkBytes: 4096,
  minMemAvailableMiB: 1024,
  sampleMs: 2000,
};

/** Any of the thresholds, each checked; the ones not given keep their defaults. */
export const policyThresholds = z
  .object({
    idleSeconds: wholeNumber(0, 10_000_000), // 0: no idle time needed
    cpuPercent: wholeNumber(0, 10_000),
    networkBytes: wholeNumber(0, Number.MAX_SAFE_INTEGER),
    minMemAvailableMiB: wholeNumber(0, 16 * 1024 * 1024),
    sampleMs: wholeNumber(1, 60_000),
  })
  .partial()
  .strict();

/** What the policy knows about one instance. */
export interface Sample {
  path: string;
  state: Instance['state'];
  pinned: boolean;
  critical: boolean;
  idleSeconds: number;
  cpuPercent: number;
  networkBytes: number;
  residentMiB: number;
}

export interface Decision {
  path: string;
  action: 'sleep' | 'keep';
  reasons: string[];
}

/**
 * Decides which instances sleep: Running or Warm ones that are idle, quiet on CPU and quiet on
 * the network; and, while MemAvailable is under the threshold, the coldest others too (longest
 * idle first) until their memory covers the shortfall. Pinned and critical instances never sleep.
 */
export function decide(samples: Sample[], memAvailableMiB: number, options: PolicyOptions): Decision[] {
  const decisions: Decision[] = [];
  const candidates: Array<{ sample: Sample; decision: Decision }> = [];
  for (const sample of samples) {
    if (sample.state !== 'Running' && sample.state !== 'Warm') continue;
    const decision: Decision = { path: sample.path, action: 'keep', reasons: [] };
    decisions.push(decision);
    if (sample.pinned || sample.critical) {
      decision.reasons.push(`exempt: ${sample.pinned ? 'pinned' : 'critical'}`);
      continue;
    }
    const idle = sample.idleSeconds >= options.idleSeconds;
    const quietCpu = sample.cpuPercent < options.cpuPercent;
    const quietNet = sample.networkBytes < options.networkBytes;
    decision.reasons.push(
      `idle ${sample.idleSeconds} s ${idle ? '>=' : '<'} ${options.idleSeconds} s`,
      `CPU ${sample.cpuPercent}% ${quietCpu ? '<' : '>='} ${options.cpuPercent}%`,
      `network ${sample.networkBytes} B ${quietNet ? '<' : '>='} ${options.networkBytes} B`,
    );
    if (idle && quietCpu && quietNet) decision.action = 'sleep';
    else candidates.push({ sample, decision });
  }
  let shortfall = options.minMemAvailableMiB - memAvailableMiB;
  if (shortfall > 0) {
    for (const d of decisions)
      if (d.action === 'sleep') shortfall -= samples.find((s) => s.path === d.path)?.residentMiB ?? 0;
    candidates.sort(
      (a, b) => b.sample.idleSeconds - a.sample.idleSeconds || a.sample.cpuPercent - b.sample.cpuPercent,
    );
    for (const { sample, decision } of candidates) {
      if (shortfall <= 0) break;
      decision.action = 'sleep';
      decision.reasons.push(
        `memory pressure: MemAvailable ${memAvailableMiB} MiB < ${options.minMemAvailableMiB} MiB; coldest first, frees ${sample.residentMiB} MiB`,
      );
      shortfall -= sample.residentMiB;
    }
  }
  return decisions;
}

export function memAvailableMiB(): number {
  const match = /MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return match ? Math.round(Number(match[1]) / 1024) : Number.POSITIVE_INFINITY;
}

const cpuTicks = (pid: number): number => {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
};

function portBytes(fleet: FleetCore, instance: Instance): number {
  const port = switchDaemonStats(networkDir(fleet.dir, instance.tenant))?.ports.find(
    (p) => p.machine === instance.path,
  );
  return port ? port.bytesReceived + port.bytesForwarded : 0;
}

/** Samples every Running and Warm instance over `sampleMs`: CPU from /proc, bytes from the switch. */
export async function sampleFleet(fleet: FleetCore, sampleMs: number): Promise<Sample[]> {
  const instances = fleet.store.listInstances().filter((i) => i.state === 'Running' || i.state === 'Warm');
  const pids = instances.map((i) => vmProcesses(instanceDir(fleet.dir, i.seq))[0]?.pid);
  const before = instances.map((i, n) => ({
    cpu: pids[n] ? cpuTicks(pids[n]) : 0,
    net: portBytes(fleet, i),
  }));
  await new Promise((resolve) => setTimeout(resolve, sampleMs));
  const now = Date.now();
  return instances.map((instance, n) => {
    const pid = pids[n];
    const ticks = pid ? cpuTicks(pid) - (before[n]?.cpu ?? 0) : 0;
    const since = Date.parse(instance.lastActiveAt ?? instance.updatedAt);
    return {
      path: instance.path,
      state: instance.state,
      pinned: instance.pinned,
      critical: instance.critical,
      idleSeconds: Math.max(0, Math.round((now - since) / 1000)),
      cpuPercent: Math.round((ticks * 10 * 100) / sampleMs), // 100 ticks a second
      networkBytes: portBytes(fleet, instance) - (before[n]?.net ?? 0),
      residentMiB: Math.round(instanceMemoryKiB(pid, instanceDir(fleet.dir, instance.seq)) / 1024),
    };
  });
}

/** Samples, decides and (unless `dryRun`) puts the chosen instances to sleep; returns the decisions. */
export async function runPolicy(
  fleet: FleetCore,
  options: { [K in keyof PolicyOptions]?: number | undefined } & { dryRun?: boolean } = {},
): Promise<Decision[]> {
  const { dryRun, ...thresholds } = options;
  const settings = withDefaults(POLICY_DEFAULTS, parseInput(policyThresholds, thresholds, 'sleep policy'));
  const decisions = decide(await sampleFleet(fleet, settings.sampleMs), memAvailableMiB(), settings);
  if (!dryRun) {
    for (const decision of decisions) if (decision.action === 'sleep') await fleet.sleep(decision.path);
  }
  return decisions;
}

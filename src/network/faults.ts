import { z } from 'zod';
import { ConfigError, describeValue } from '../errors.js';
import { parseInput, wholeNumber } from '../util/validate.js';

/**
 * Network faults, the policy half: what partitions and impairments a switch has, which frames
 * they match, and what happens to each frame (drop, duplicate, delay, hold back). The switch
 * (switch.ts) asks `Faults.verdict` once per frame and target port and carries the answer out.
 *
 * Machines are named by their plain name ("web"); a frame's sender is the machine that claimed its
 * source MAC, its receiver the machine its target port was learned to be. A frame from a MAC no
 * machine claimed belongs to no machine: only whole-VLAN impairments apply to it, no partition.
 */

/** A machine as callers name it: its name, or anything with a `name` (a Machine). */
export type MachineRef = string | { readonly name: string };

export interface ImpairOptions {
  /** Frames from or to any of these machines. */
  machines?: MachineRef | MachineRef[];
  /** Frames sent by these machines. */
  from?: MachineRef | MachineRef[];
  /** Frames delivered to these machines. */
  to?: MachineRef | MachineRef[];
  /** Share of frames dropped, 0 to 100. */
  lossPercent?: number;
  /** Added latency, 0 to 60000 ms. */
  delayMs?: number;
  /** Latency varies uniformly by up to this much either way (clamped at 0), 0 to 60000 ms. */
  jitterMs?: number;
  /** Share of frames delivered twice, 0 to 100. */
  duplicatePercent?: number;
  /** Share of frames held back until the next frame on their path has overtaken them, 0 to 100. */
  reorderPercent?: number;
  /** Average rate cap per path (sender port to target port), in kbit/s, at least 1. */
  rateKbps?: number;
  /** Seed of the random choices, 0 to 2^32-1; by default a hash of the other options. */
  seed?: number;
}

export interface FaultHandle {
  /** Undoes this fault alone. Calling it again does nothing. */
  remove(): void;
}

/** What happens to one frame on its way to one port: dropped, or delivered like this. */
export interface Delivery {
  drop: false;
  copies: 1 | 2;
  delayMs: number;
  /** Held back until the next frame on its path has gone. */
  hold: boolean;
}
export type Verdict = { drop: true } | Delivery;

const PASS: Delivery = { drop: false, copies: 1, delayMs: 0, hold: false };
const EFFECTS = [
  'lossPercent',
  'delayMs',
  'jitterMs',
  'duplicatePercent',
  'reorderPercent',
  'rateKbps',
] as const;

/** Counters of a switch or of one of its ports. Received: into the switch; the rest: out to ports. */
export interface SwitchCounters {
  framesReceived: number;
  bytesReceived: number;
  /** Frames (copies included) written to ports, and their bytes. */
  framesForwarded: number;
  bytesForwarded: number;
  /** Frames dropped because the target port's queue was full (it does not read fast enough). */
  droppedByQueue: number;
  /** Frames dropped by a partition or by loss. */
  droppedByFault: number;
  /** Extra copies sent by duplication. */
  duplicated: number;
  /** Frames (copies included) that waited for a delay, jitter or rate cap. */
  delayed: number;
}

export const zeroCounters = (): SwitchCounters => ({
  framesReceived: 0,
  bytesReceived: 0,
  framesForwarded: 0,
  bytesForwarded: 0,
  droppedByQueue: 0,
  droppedByFault: 0,
  duplicated: 0,
  delayed: 0,
});

/** mulberry32: a small, fast, seeded PRNG; numbers in [0, 1). */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a of a string: the default seed, so that the same options give the same choices. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return hash;
}

const range = (min: number, max: number, what: string) =>
  z
    .number({ error: `must be ${what} from ${min} to ${max}` })
    .refine((n) => Number.isFinite(n) && n >= min && n <= max, {
      error: `must be ${what} from ${min} to ${max}`,
    });

const isObject = (value: unknown): value is { name?: unknown } =>
  value !== null && typeof value === 'object' && !Array.isArray(value);
/** A machine's name, or an object with one (a Machine): the name. */
const machineRef = z.preprocess(
  (value) => (isObject(value) ? value.name : value),
  z.string({ error: 'must be a machine name or a machine' }).min(1, { error: 'must not be empty' }),
);
/** One machine or a list of them. */
const machineList = z.preprocess(
  (value) => (typeof value === 'string' || isObject(value) ? [value] : value),
  z
    .array(machineRef, { error: 'must be a machine, its name, or a list of them' })
    .min(1, { error: 'must name at least one machine' }),
);

const impairSchema = z
  .object({
    machines: machineList.optional(),
    from: machineList.optional(),
    to: machineList.optional(),
    lossPercent: range(0, 100, 'a percentage').optional(),
    delayMs: range(0, 60_000, 'a number of milliseconds').optional(),
    jitterMs: range(0, 60_000, 'a number of milliseconds').optional(),
    duplicatePercent: range(0, 100, 'a percentage').optional(),
    reorderPercent: range(0, 100, 'a percentage').optional(),
    rateKbps: range(1, 100_000_000, 'a rate in kbit/s').optional(),
    seed: wholeNumber(0, 2 ** 32 - 1).optional(),
  })
  .strict();

const group = z
  .array(machineRef, { error: 'must be a list of machines' })
  .min(1, { error: 'must not be empty' });
const partitionSchema = z
  .array(group, { error: 'must be a list of groups, each a list of machines' })
  .min(1, { error: 'must have at least one group' });

/** Throws a ConfigError unless `name` is a machine on the switch. */
function checkKnown(name: string, known: ReadonlySet<string>, what: string, path: string): void {
  if (known.has(name)) return;
  const here = known.size ? [...known].sort().join(', ') : 'none';
  throw new ConfigError(
    `${what}: ${path}: no machine ${describeValue(name)} on this switch (machines on it: ${here})`,
  );
}

export type ImpairSettings = Omit<ImpairOptions, 'machines' | 'from' | 'to'> & {
  machines?: string[];
  from?: string[];
  to?: string[];
  seed: number;
};

/** Checks impair() options against the machines on the switch; the seed filled in. */
export function parseImpairOptions(
  options: unknown,
  known: ReadonlySet<string>,
  what: string,
): ImpairSettings {
  const parsed = parseInput(impairSchema, options, what);
  for (const field of ['machines', 'from', 'to'] as const) {
    for (const [index, name] of (parsed[field] ?? []).entries())
      checkKnown(name, known, what, `${field}[${index}]`);
  }
  if (!EFFECTS.some((effect) => parsed[effect] !== undefined)) {
    throw new ConfigError(`${what}: give at least one of ${EFFECTS.join(', ')} (got none)`);
  }
  return { ...parsed, seed: parsed.seed ?? fnv1a(JSON.stringify(parsed)) };
}

/** Checks partition() groups against the machines on the switch: each machine in one group at most. */
export function parsePartition(groups: unknown, known: ReadonlySet<string>, what: string): string[][] {
  const parsed = parseInput(z.object({ groups: partitionSchema }), { groups }, what).groups;
  const seen = new Map<string, string>();
  parsed.forEach((group, g) => {
    group.forEach((name, m) => {
      const path = `groups[${g}][${m}]`;
      checkKnown(name, known, what, path);
      const earlier = seen.get(name);
      if (earlier !== undefined) {
        throw new ConfigError(`${what}: ${path}: machine ${describeValue(name)} is already in ${earlier}`);
      }
      seen.set(name, `groups[${g}]`);
    });
  });
  return parsed;
}

/** Checks the machine given to isolate(). */
export function parseMachine(machine: unknown, known: ReadonlySet<string>, what: string): string {
  const name = parseInput(z.object({ machine: machineRef }), { machine }, what).machine;
  checkKnown(name, known, what, 'machine');
  return name;
}

/**
 * Machines in different groups cannot exchange frames. Machines named in no group form one more,
 * implicit group together: `[[a, b]]` cuts a and b off from everyone else (who still talk among
 * themselves), so isolating a machine is `[[machine]]`.
 */
class Partition {
  private readonly groupOf = new Map<string, number>();

  constructor(groups: string[][]) {
    groups.forEach((group, index) => {
      for (const name of group) this.groupOf.set(name, index);
    });
  }

  blocks(from: string | undefined, to: string | undefined): boolean {
    if (from === undefined || to === undefined) return false;
    return (this.groupOf.get(from) ?? -1) !== (this.groupOf.get(to) ?? -1);
  }
}

/** One impair() call: which frames it matches, its PRNG and its per-path rate clocks. */
class Impairment {
  private readonly random: () => number;
  private readonly sets: { machines?: Set<string>; from?: Set<string>; to?: Set<string> } = {};
  /** Per path: when the last frame finishes passing at rateKbps (performance.now() ms). */
  private readonly pace = new Map<string, number>();

  constructor(readonly settings: ImpairSettings) {
    this.random = mulberry32(settings.seed);
    for (const field of ['machines', 'from', 'to'] as const) {
      const names = settings[field];
      if (names) this.sets[field] = new Set(names);
    }
  }

  /** Every selector given must match; with none, every frame on the VLAN does. */
  matches(from: string | undefined, to: string | undefined): boolean {
    const { machines, from: senders, to: receivers } = this.sets;
    if (!machines && !senders && !receivers) return true;
    if (from === undefined) return false; // a frame of no machine: only whole-VLAN faults
    if (machines && !machines.has(from) && !(to !== undefined && machines.has(to))) return false;
    if (senders && !senders.has(from)) return false;
    if (receivers && !(to !== undefined && receivers.has(to))) return false;
    return true;
  }

  /** The random choices are drawn in a fixed order, only for effects set, so a seed replays. */
  decide(path: string, bytes: number, now: number): Verdict {
    const s = this.settings;
    if (s.lossPercent && this.random() * 100 < s.lossPercent) return { drop: true };
    const copies = s.duplicatePercent && this.random() * 100 < s.duplicatePercent ? 2 : 1;
    let delayMs = s.delayMs ?? 0;
    if (s.jitterMs) delayMs = Math.max(0, delayMs + (this.random() * 2 - 1) * s.jitterMs);
    const hold = Boolean(s.reorderPercent && this.random() * 100 < s.reorderPercent);
    if (s.rateKbps) {
      // A token bucket one frame deep: the path is a link of rateKbps (1 kbit/s is 1 bit per ms).
      const start = Math.max(now, this.pace.get(path) ?? now);
      this.pace.set(path, start + (bytes * 8) / s.rateKbps);
      delayMs += start - now;
    }
    return { drop: false, copies, delayMs, hold };
  }

  forgetPaths(matching: (path: string) => boolean): void {
    for (const path of this.pace.keys()) if (matching(path)) this.pace.delete(path);
  }
}

/** The partitions and impairments of one switch. */
export class Faults {
  private readonly partitions = new Set<Partition>();
  private readonly impairments = new Set<Impairment>();

  get active(): boolean {
    return this.partitions.size > 0 || this.impairments.size > 0;
  }

  addPartition(groups: string[][]): FaultHandle {
    const partition = new Partition(groups);
    this.partitions.add(partition);
    return { remove: () => void this.partitions.delete(partition) };
  }

  addImpairment(settings: ImpairSettings): FaultHandle {
    const impairment = new Impairment(settings);
    this.impairments.add(impairment);
    return { remove: () => void this.impairments.delete(impairment) };
  }

  clear(): void {
    this.partitions.clear();
    this.impairments.clear();
  }

  /**
   * The fate of one frame of `bytes` from machine `from` to the port of machine `to` on `path`
   * (a key naming sender and target port). Any partition or loss drops it; effects of several
   * matching impairments add up: delays and rate waits sum, any duplication or hold applies.
   */
  verdict(
    from: string | undefined,
    to: string | undefined,
    path: string,
    bytes: number,
    now: number,
  ): Verdict {
    for (const partition of this.partitions) if (partition.blocks(from, to)) return { drop: true };
    let verdict: Delivery = PASS;
    let dropped = false;
    // Every matching impairment decides, so each one's random choices do not depend on the others.
    for (const impairment of this.impairments) {
      if (!impairment.matches(from, to)) continue;
      const one = impairment.decide(path, bytes, now);
      if (one.drop) {
        dropped = true;
        continue;
      }
      verdict = {
        drop: false,
        copies: one.copies === 2 ? 2 : verdict.copies,
        delayMs: verdict.delayMs + one.delayMs,
        hold: verdict.hold || one.hold,
      };
    }
    return dropped ? { drop: true } : verdict;
  }

  /** Forgets the rate clocks of paths through a port that left. */
  forgetPort(port: number): void {
    const ends = (path: string) => path.startsWith(`${port}>`) || path.endsWith(`>${port}`);
    for (const impairment of this.impairments) impairment.forgetPaths(ends);
  }
}

/**
 * Records due at given times (performance.now() ms), written in order of due time (and of
 * arrival when due together) by one timer. `bytes` is what it holds, for the bound on memory.
 */
export class DelayLine {
  private readonly entries: Array<{ due: number; record: Buffer }> = [];
  private timer: NodeJS.Timeout | undefined;
  bytes = 0;

  constructor(private readonly release: (record: Buffer) => void) {}

  add(due: number, record: Buffer): void {
    let at = this.entries.length;
    while (at > 0 && (this.entries[at - 1]?.due ?? 0) > due) at--;
    this.entries.splice(at, 0, { due, record });
    this.bytes += record.length;
    if (at === 0) this.arm();
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.entries.length = 0;
    this.bytes = 0;
  }

  private arm(): void {
    clearTimeout(this.timer);
    const head = this.entries[0];
    this.timer = head ? setTimeout(() => this.flush(), Math.max(0, head.due - performance.now())) : undefined;
  }

  private flush(): void {
    // Timers round to whole milliseconds: what is due within the next one goes now.
    const now = performance.now() + 1;
    let due = 0;
    while (due < this.entries.length && (this.entries[due]?.due ?? 0) <= now) due++;
    for (const { record } of this.entries.splice(0, due)) {
      this.bytes -= record.length;
      this.release(record);
    }
    this.arm();
  }
}

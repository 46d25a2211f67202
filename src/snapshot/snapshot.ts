import { ConfigError, describeValue } from '../errors.js';
import type { SnapshotTaker } from '../machine/internals.js';
import type { Machine } from '../machine/machine.js';
import type { SnapshotManifest, SnapshotRecord } from './manifest.js';
import {
  type ClonePoolOptions,
  type ForkOptions,
  parseClonePoolOptions,
  parseForkOptions,
  type RestoreOptions,
} from './options.js';
import { restoreFrom } from './restore.js';
import { takeSnapshot } from './take.js';
import { warmUp } from './warm-up.js';

export type { SnapshotOptions } from '../machine/internals.js';
export type { ClonePoolOptions, ForkOptions, RestoreOptions } from './options.js';

// machine.snapshot() hands out what this layer's taker makes: a Snapshot.
declare module '../machine/internals.js' {
  interface TakenSnapshot extends Snapshot {}
}

/** A saved running machine: restore it, or fork it into independent clones. */
export class Snapshot implements SnapshotRecord {
  /** @internal Snapshots come from machine.snapshot() and the store (openSnapshot, listSnapshots). */
  constructor(
    readonly manifest: SnapshotManifest,
    readonly dir: string,
  ) {}

  get id(): string {
    return this.manifest.id;
  }

  get name(): string {
    return this.manifest.name;
  }

  /** A new machine, exactly as this one was when the snapshot was taken. */
  restore(options: RestoreOptions = {}): Promise<Machine> {
    return restoreFrom(this, options, snapshotTaker);
  }

  /** `count` independent clones at once: all start, or none is left running. */
  fork(count: number, options: ForkOptions = {}): Promise<Machine[]> {
    return forkClones(this, count, options);
  }

  /** Clones restored ahead of demand: see ClonePool. */
  pool(options: ClonePoolOptions = {}): ClonePool {
    return new ClonePool(this, options);
  }
}

/** What machine.snapshot() runs: takes the snapshot into the store and hands it out. */
export const snapshotTaker: SnapshotTaker = async (machine, name, options) => {
  const { manifest, dir } = await takeSnapshot(machine, name, options);
  return new Snapshot(manifest, dir);
};

/** Starts a fresh VMM from a snapshot; resolves when the guest agent answers. */
export async function restoreMachine(snapshot: Snapshot, options: RestoreOptions = {}): Promise<Machine> {
  requireSnapshot('restoreMachine', snapshot);
  return snapshot.restore(options);
}

/** Starts `count` independent clones of a snapshot at once. All start, or none is left running. */
export async function forkMachines(
  snapshot: Snapshot,
  count: number,
  options: ForkOptions = {},
): Promise<Machine[]> {
  requireSnapshot('forkMachines', snapshot);
  return forkClones(snapshot, count, options);
}

/** Throws a ConfigError unless `value` is a Snapshot. */
export function requireSnapshot(caller: string, value: unknown): asserts value is Snapshot {
  if (!(value instanceof Snapshot)) {
    throw new ConfigError(
      `${caller} needs a Snapshot (from machine.snapshot() or openSnapshot()), not ${describeValue(value)}`,
    );
  }
}

/** Starts `count` independent clones of a snapshot at once. All start, or none is left running. */
export async function forkClones(
  snapshot: Snapshot,
  count: number,
  options: ForkOptions = {},
): Promise<Machine[]> {
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > 256)
    throw new ConfigError(`fork count must be a whole number from 1 to 256, not ${describeValue(count)}`);
  options = parseForkOptions(options);
  const names =
    options.names ?? Array.from({ length: count }, (_, i) => `${snapshot.manifest.source}-${i + 1}`);
  if (names.length !== count) throw new ConfigError(`fork got ${names.length} names for ${count} clones`);
  const { names: _names, ...restore } = options;
  const results = await Promise.allSettled(names.map((name) => snapshot.restore({ ...restore, name })));
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  const machines = results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  if (failed) {
    await Promise.allSettled(machines.map((machine) => machine.close()));
    throw failed.reason;
  }
  return machines;
}

/**
 * Keeps clones of a snapshot restored and running ahead of demand, so that take() hands one
 * out at once and the emulator's warm-up after a restore is already paid. Every clone gets the
 * same options: give networks only when clones may share them (no fixed addresses).
 */
export class ClonePool implements AsyncDisposable {
  private readonly ready: Array<Promise<Machine>> = [];
  private readonly aborter = new AbortController();
  private count = 0;
  private closed = false;
  private readonly options: ClonePoolOptions;

  constructor(
    readonly snapshot: Snapshot,
    options: ClonePoolOptions = {},
  ) {
    this.options = parseClonePoolOptions(options);
    const size = this.options.size ?? 1;
    for (let i = 0; i < size; i++) this.ready.push(this.restoreOne());
  }

  /** A running clone, restored in advance when the pool had one; the pool refills behind it. */
  async take(): Promise<Machine> {
    if (this.closed) throw new ConfigError(`the pool of ${this.snapshot.id} is closed`);
    const next = this.ready.shift() ?? this.restoreOne();
    this.ready.push(this.restoreOne());
    const clone = await next;
    if (clone.isRunning) return clone;
    // It died while waiting (killed from outside, out of memory): hand out a fresh one instead.
    await clone.close();
    return this.restoreOne();
  }

  /** Resolves once the next take() can hand out a clone at once (rejects if that clone failed). */
  async whenReady(): Promise<void> {
    await this.ready[0];
  }

  /** Stops the clones waiting in the pool; clones already taken are the caller's. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.aborter.abort();
    const waiting = await Promise.allSettled(this.ready.splice(0));
    await Promise.allSettled(
      waiting.flatMap((result) => (result.status === 'fulfilled' ? [result.value.close()] : [])),
    );
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private restoreOne(): Promise<Machine> {
    const { size: _size, prefix, ...restore } = this.options;
    const name = `${prefix ?? this.snapshot.manifest.source}-${++this.count}`;
    const clone = this.snapshot.restore({ ...restore, name, signal: this.aborter.signal }).then(warmUp);
    clone.catch(() => {}); // reported to whoever takes it
    return clone;
  }
}

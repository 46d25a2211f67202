import { ConfigError, describeValue } from '../errors.js';
import type { Machine, SnapshotTaker } from '../machine/machine.js';
import { type ForkOptions, forkClones } from './fork.js';
import type { SnapshotManifest, SnapshotRecord } from './manifest.js';
import { type PoolOptions, RestorePool } from './pool.js';
import { type RestoreOptions, restoreFrom } from './restore.js';
import { type SnapshotOptions, takeSnapshot } from './take.js';

export type { SnapshotOptions } from './take.js';

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

  /** Clones restored ahead of demand: see RestorePool. */
  pool(options: PoolOptions = {}): RestorePool {
    return new RestorePool(this, options);
  }
}

/** What machine.snapshot() runs: takes the snapshot into the store and hands it out. */
export const snapshotTaker: SnapshotTaker = async (machine, name, options: SnapshotOptions) => {
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

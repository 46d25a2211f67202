import { ConfigError } from '../errors.js';
import type { Machine } from '../machine/machine.js';
import { parsePoolOptions } from './options.js';
import type { RestoreOptions } from './restore.js';
import type { Snapshot } from './snapshot.js';

export interface PoolOptions extends Omit<RestoreOptions, 'name' | 'signal'> {
  /** How many restored clones to keep ready (default 1). */
  size?: number;
  /** Clone names are <prefix>-1, <prefix>-2, ...; default the snapshot's source machine. */
  prefix?: string;
}

/**
 * Keeps clones of a snapshot restored and running ahead of demand, so that take() hands one
 * out at once and the emulator's warm-up after a restore is already paid. Every clone gets the
 * same options: give networks only when clones may share them (no fixed addresses).
 */
export class RestorePool implements AsyncDisposable {
  private readonly ready: Array<Promise<Machine>> = [];
  private readonly aborter = new AbortController();
  private count = 0;
  private closed = false;
  private readonly options: PoolOptions;

  constructor(
    readonly snapshot: Snapshot,
    options: PoolOptions = {},
  ) {
    this.options = parsePoolOptions(options);
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
    const clone = this.snapshot.restore({ ...restore, name, signal: this.aborter.signal });
    clone.catch(() => {}); // reported to whoever takes it
    return clone;
  }
}

// Measurements 1, 2 and 3, alternating: cold boot to first command, restore of a snapshot to first
// command, and restore from a warm pool (pool.take()) to first command.

import { setTimeout as sleep } from 'node:timers/promises';
import type { ClonePool, Snapshot } from 'vmkit';
import { adoptMachine, closeMachine, log, round } from '../lib.js';
import { boot, closePool, firstCommand, qemuCpuMs, restore, restoreOptions, trackPool } from './common.js';
import { bootedRamMatcher, type Memory, measureMemory } from './memory.js';

/**
 * How long the pool is given to restore its next clone after a take() (or after it was made),
 * at least: sampling waits this long, so the clone taken is waiting and the refill is not
 * competing with the next sample. Raised to twice the slowest plain restore seen when that is longer.
 */
export const POOL_REFILL_MS = 2_000;
/** A take() slower than this did not find a clone waiting. */
export const TAKE_IMMEDIATE_MS = 50;

// ---------------------------------------------------------------------------------------------
// 1 and 2: cold boot and restore to first command

interface ColdSample {
  /** startMachine() call to execute('true') answered. */
  totalMs: number;
  /** startMachine() call to resolved. */
  startMs: number;
  /** vmkit's own figure: launch until the backdoor answered. */
  readyMs: number;
  firstCommandMs: number;
  /** CPU time QEMU used from its start until the first command was answered. */
  qemuCpuMs: number;
  closeMs: number;
  memory: Memory;
}

async function coldSample(name: string): Promise<ColdSample> {
  const began = performance.now();
  const machine = await boot(name);
  const startMs = performance.now() - began;
  try {
    const firstCommandMs = await firstCommand(machine);
    const totalMs = performance.now() - began;
    const cpuMs = qemuCpuMs(machine.pid);
    const memory = await measureMemory(machine.pid, bootedRamMatcher(name));
    return {
      totalMs: round(totalMs),
      startMs: round(startMs),
      readyMs: machine.readyMs,
      firstCommandMs: round(firstCommandMs),
      qemuCpuMs: cpuMs,
      closeMs: await closeMachine(machine),
      memory,
    };
  } finally {
    await closeMachine(machine);
  }
}

interface RestoreSample {
  /** restoreMachine() call to execute('true') answered. */
  totalMs: number;
  /** restoreMachine() call to resolved (checks, QEMU start, state load, setup script). */
  restoreMs: number;
  /** vmkit's own figure: launch until the backdoor answered (QEMU start + state load). */
  readyMs: number;
  /**
   * restoreMs - readyMs: from the backdoor answering until restoreMachine() resolved, which is
   * vmkit's set-up (the guest agent's identity request: clock, hostname, entropy; before it, a
   * script run in a new guest process): the first guest work after the restore.
   */
  setupMs: number;
  firstCommandMs: number;
  /** CPU time QEMU used from its start until the first command was answered. */
  qemuCpuMs: number;
  closeMs: number;
}

async function restoreSample(snapshot: Snapshot, name: string): Promise<RestoreSample> {
  const began = performance.now();
  const machine = await restore(snapshot, name);
  const restoreMs = performance.now() - began;
  try {
    const firstCommandMs = await firstCommand(machine);
    const totalMs = performance.now() - began;
    return {
      totalMs: round(totalMs),
      restoreMs: round(restoreMs),
      readyMs: machine.readyMs,
      setupMs: round(restoreMs - machine.readyMs),
      firstCommandMs: round(firstCommandMs),
      qemuCpuMs: qemuCpuMs(machine.pid),
      closeMs: await closeMachine(machine),
    };
  } finally {
    await closeMachine(machine);
  }
}

// ---------------------------------------------------------------------------------------------
// 3: restore from a warm pool

interface PooledSample {
  /** pool.take() call to execute('true') answered. */
  totalMs: number;
  /** pool.take() call to resolved: about 0 when a clone was waiting. */
  takeMs: number;
  firstCommandMs: number;
  /** The clone's own restore: launch until the backdoor answered (paid before the take). */
  readyMs: number;
  /** Since the pool was made or last taken from, when this take() was called. */
  waitedMs: number;
  /** CPU time the clone's QEMU used before it was taken: its restore, then waiting idle. */
  qemuCpuBeforeTakeMs: number;
  /** CPU time the clone's QEMU used for the first command. */
  qemuCpuFirstCommandMs: number;
  closeMs: number;
}

/** A pool of one, and when it last started restoring a clone. */
class WarmPool {
  readonly pool: ClonePool;
  private refillStarted = performance.now();

  constructor(snapshot: Snapshot) {
    this.pool = trackPool(snapshot.pool({ size: 1, prefix: 'bench-pool', ...restoreOptions }));
  }

  /** Waits until at least `refillMs` passed since the pool last started restoring a clone. */
  async settle(refillMs: number): Promise<number> {
    const waited = performance.now() - this.refillStarted;
    if (waited < refillMs) await sleep(refillMs - waited);
    return performance.now() - this.refillStarted;
  }

  async sample(refillMs: number): Promise<PooledSample> {
    const waitedMs = await this.settle(refillMs);
    const began = performance.now();
    const machine = adoptMachine(await this.pool.take());
    this.refillStarted = performance.now();
    const takeMs = performance.now() - began;
    try {
      const cpuBefore = qemuCpuMs(machine.pid);
      const firstCommandMs = await firstCommand(machine);
      const totalMs = performance.now() - began;
      const cpuAfter = qemuCpuMs(machine.pid);
      return {
        totalMs: round(totalMs),
        takeMs: round(takeMs),
        firstCommandMs: round(firstCommandMs),
        readyMs: machine.readyMs,
        waitedMs: round(waitedMs),
        qemuCpuBeforeTakeMs: cpuBefore,
        qemuCpuFirstCommandMs: cpuAfter - cpuBefore,
        closeMs: await closeMachine(machine),
      };
    } finally {
      await closeMachine(machine);
    }
  }

  async close(): Promise<void> {
    await closePool(this.pool);
  }
}

// ---------------------------------------------------------------------------------------------
// 1, 2 and 3 alternating (1, 2, 3, 1, 2, 3, ...), so that load weighs on all alike

/** `warmup` unmeasured triples, then `samples` measured ones; returns the measured samples. */
export async function alternatingSamples(snapshot: Snapshot, warmup: number, samples: number) {
  log(
    `${warmup} warm-up triple(s), then ${samples} measured triple(s), alternating cold boot, restore ` +
      'and restore from a warm pool',
  );
  const cold: ColdSample[] = [];
  const restored: RestoreSample[] = [];
  const pooled: PooledSample[] = [];
  const pool = new WarmPool(snapshot);
  let refillMs = POOL_REFILL_MS;
  try {
    for (let i = 0; i < warmup + samples; i++) {
      const measured = i >= warmup;
      const label = measured ? `triple ${i - warmup + 1}/${samples}` : `warm-up ${i + 1}/${warmup}`;
      const a = await coldSample(`bench-cold-${i}`);
      log(
        `${label} cold boot: ${a.totalMs} ms to first command (start ${a.startMs}, ready ${a.readyMs}, ` +
          `command ${a.firstCommandMs}; QEMU CPU ${a.qemuCpuMs}), close ${a.closeMs} ms`,
      );
      const b = await restoreSample(snapshot, `bench-restore-${i}`);
      log(
        `${label} restore:   ${b.totalMs} ms to first command (ready ${b.readyMs}, setup ${b.setupMs}, ` +
          `command ${b.firstCommandMs}; QEMU CPU ${b.qemuCpuMs}), close ${b.closeMs} ms`,
      );
      refillMs = Math.max(refillMs, 2 * b.restoreMs);
      const c = await pool.sample(refillMs);
      log(
        `${label} pooled:    ${c.totalMs} ms to first command (take ${c.takeMs}, command ${c.firstCommandMs}; ` +
          `restored in ${c.readyMs} ms, waited ${c.waitedMs} ms using ${c.qemuCpuBeforeTakeMs} ms QEMU CPU), ` +
          `close ${c.closeMs} ms` +
          (c.takeMs > TAKE_IMMEDIATE_MS ? '; NOT READY: take() waited for the restore' : ''),
      );
      // The pool restores the next clone now: let that finish before the next cold boot.
      await pool.settle(refillMs);
      if (measured) {
        cold.push(a);
        restored.push(b);
        pooled.push(c);
      }
    }
  } finally {
    await pool.close();
  }
  return { cold, restored, pooled };
}

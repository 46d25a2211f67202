// What the snapshot benchmark's measurements share: cleanup of the snapshots and pools it makes,
// the machine it boots and restores, the first command, and QEMU's CPU time.

import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  type ClonePool,
  type Machine,
  type RestoreOptions,
  restoreMachine,
  type Snapshot,
  startMachine,
} from 'vmkit';
import { adoptMachine, BOOT_TIMEOUT_MS, CPUS, MEMORY_MIB, onCleanup } from '../lib.js';

/** Bounds a stalled command instead of letting it wait out vmkit's two-minute default. */
const COMMAND_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// Cleanup of what only this benchmark makes: snapshots until deleted, pools until closed
// (machines are closed by lib.ts).

const snapshotDirs = new Set<string>();
const pools = new Set<ClonePool>();
/** Set while a suite runs: its snapshots are the store's entries named <slug>.<machine>-<hash>. */
let suiteSnapshots: { root: string; slug: string } | undefined;

onCleanup(() => {
  // Stops the clones waiting in pools (vmkit's exit handler kills their QEMUs at exit anyway).
  for (const pool of pools) void pool.close();
  for (const dir of snapshotDirs) rmSync(dir, { recursive: true, force: true });
  snapshotDirs.clear();
  if (suiteSnapshots) {
    const { root, slug } = suiteSnapshots;
    for (const entry of readdirSync(root)) {
      if (entry.startsWith(`${slug}.`)) rmSync(join(root, entry), { recursive: true, force: true });
    }
  }
});

export async function closePools(): Promise<void> {
  await Promise.allSettled([...pools].map((pool) => pool.close()));
  pools.clear();
}

export function trackPool(pool: ClonePool): ClonePool {
  pools.add(pool);
  return pool;
}

export async function closePool(pool: ClonePool): Promise<void> {
  await pool.close();
  pools.delete(pool);
}

export function track(snapshot: Snapshot): Snapshot {
  snapshotDirs.add(snapshot.dir);
  return snapshot;
}

export function dropSnapshot(snapshot: Snapshot): void {
  rmSync(snapshot.dir, { recursive: true, force: true });
  snapshotDirs.delete(snapshot.dir);
}

/** Marks (or, given undefined, unmarks) the snapshots of a running suite for removal on cleanup. */
export function trackSuiteSnapshots(suite: { root: string; slug: string } | undefined): void {
  suiteSnapshots = suite;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Runs `true` and insists it worked; returns the round trip. */
export async function firstCommand(machine: Machine): Promise<number> {
  const began = performance.now();
  const result = await machine.execute('true');
  if (result.exitCode !== 0) {
    throw new Error(`${machine.name}: execute('true') exited ${result.exitCode}: ${result.stderr}`);
  }
  return performance.now() - began;
}

/**
 * CPU time QEMU has used so far (user + system, ms), from /proc/<pid>/stat. Under TCG this is
 * where the guest's work shows: a busy guest is a busy QEMU.
 */
export function qemuCpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  // utime and stime are fields 14 and 15 of the line, in clock ticks (USER_HZ, 100 on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

export const machineOptions = {
  image: 'tiny',
  memoryMiB: MEMORY_MIB,
  cpus: CPUS,
  accel: 'auto',
} as const;
export const timeouts = { timeoutMs: BOOT_TIMEOUT_MS, commandTimeoutMs: COMMAND_TIMEOUT_MS } as const;

/** A cold boot (fresh: true: not from the boot cache). */
export async function boot(name: string): Promise<Machine> {
  return adoptMachine(await startMachine({ name, ...machineOptions, ...timeouts, fresh: true }));
}

export const restoreOptions: RestoreOptions = { ...timeouts };

export async function restore(snapshot: Snapshot, name: string): Promise<Machine> {
  return adoptMachine(await restoreMachine(snapshot, { ...restoreOptions, name }));
}

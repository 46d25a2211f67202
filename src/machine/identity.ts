import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type Runtime, SHARED_MEMORY_DIR } from '../runtime/runtime.js';

/** A stable, locally administered MAC per machine name and NIC. */
export function macAddress(name: string, index: number | string): string {
  const hash = createHash('sha256').update(`${name}/${index}`).digest();
  return ['52', '54', ...[0, 1, 2, 3].map((i) => (hash[i] ?? 0).toString(16).padStart(2, '0'))].join(':');
}

/** A new machine's own machine ID (/etc/machine-id on systemd guests): 128 random bits, hex. */
export function newMachineId(): string {
  return randomBytes(16).toString('hex');
}

/**
 * A machine ID that stays the same for `name` (a project VM's folder): its boots write the same
 * one, and another name gets another.
 */
export function stableMachineId(name: string): string {
  return createHash('sha256').update(`machine-id/${name}`).digest('hex').slice(0, 32);
}

/**
 * Where a booting machine's RAM file goes: shared memory when there is some, so guest RAM never
 * pages to disk. Named after the run, so that the reaper can tell whose it is if the run dies
 * before QEMU has mapped and vmkit has unlinked it.
 */
export function ramFilePath(runtime: Runtime, stateDir: string, name: string): string {
  const dir = existsSync(SHARED_MEMORY_DIR) ? SHARED_MEMORY_DIR : stateDir;
  return join(dir, `vmkit-${runtime.runId}-${name}-${randomBytes(4).toString('hex')}.ram`);
}

import { existsSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { processStartTicks } from '../runtime/reaper.js';
import { SHARED_MEMORY_DIR } from '../runtime/runtime.js';
import {
  acquireLock,
  intentPath,
  LockedError,
  readJson,
  readState,
  snapshotsDir,
  writeFileAtomic,
  writeState,
} from './state.js';
import { type ProjectVm, stopHub, stopVmm, vmmRecord } from './vmm.js';
import { projectVmms } from './vmms.js';

/**
 * Crash-safe multi-step operations on a project VM, as the fleet has them: an intent is recorded
 * in `.vmkit/<vm>/intent.json` before the first step and removed after the last. An intent whose
 * process is gone (same pid and start time no more) was cut off; the next command settles it
 * before doing anything else, so that `state.json`, `status` and the processes agree again.
 *
 * - `up` (boot, mount /work, provision, clean snapshot): undone. Its QEMU and hub are ended and
 *   the VM is marked not up; the next `up` starts over from the disks.
 * - `snapshot` and `provision` on a VM that was up: the VM stays up. A migration QEMU carries on
 *   without its caller is cancelled and a guest left paused by it is resumed.
 * - `restore`: undone like `up` (the disks may be half copied back; the VM is down).
 * All of them: a half-written snapshot (`snapshots/.taking-*`) is removed, and a snapshot that was
 * being replaced is put back if its new version never landed.
 */
export type IntentOperation = 'up' | 'snapshot' | 'provision' | 'restore';

interface Intent {
  operation: IntentOperation;
  pid: number;
  startTicks: string;
  at: string;
}

const LOCK_WAIT_MS = 2000;

const ownerAlive = (intent: Intent) => processStartTicks(intent.pid) === intent.startTicks;

/** Runs `work` under an intent; a failure of `work` is settled at once, as a cut-off one would be. */
export async function withIntent<T>(
  pvm: ProjectVm,
  operation: IntentOperation,
  work: () => Promise<T>,
): Promise<T> {
  const intent: Intent = {
    operation,
    pid: process.pid,
    startTicks: processStartTicks(process.pid) ?? '',
    at: new Date().toISOString(),
  };
  writeFileAtomic(intentPath(pvm.dir), JSON.stringify(intent));
  try {
    const result = await work();
    rmSync(intentPath(pvm.dir), { force: true });
    return result;
  } catch (error) {
    await settle(pvm, intent).catch(() => {});
    throw error;
  }
}

/**
 * Settles an intent whose process is gone, for a caller that holds the VM's lock; says what it
 * did, or undefined when there was nothing to settle.
 */
export async function settleInterrupted(pvm: ProjectVm): Promise<string | undefined> {
  const intent = readJson<Intent>(intentPath(pvm.dir));
  if (!intent || ownerAlive(intent)) return undefined;
  return `${intent.operation} by pid ${intent.pid} (at ${intent.at}) was cut off: ${await settle(pvm, intent)}`;
}

/** settleInterrupted under the VM's lock, for commands that take none (status, exec, sync). */
export async function repairVm(pvm: ProjectVm, log: (line: string) => void): Promise<void> {
  const intent = readJson<Intent>(intentPath(pvm.dir));
  if (!intent || ownerAlive(intent)) return;
  // A live holder of the lock settles it itself (up, down, snapshot do first): no need to wait long.
  const release = await acquireLock(pvm.dir, 'repair', LOCK_WAIT_MS).catch((error: Error) => {
    if (error instanceof LockedError) return undefined;
    throw error;
  });
  if (!release) return;
  try {
    const done = await settleInterrupted(pvm);
    if (done) log(`vmkit: repaired VM ${pvm.vm.name}: ${done}`);
  } finally {
    release();
  }
}

async function settle(pvm: ProjectVm, intent: Intent): Promise<string> {
  const done: string[] = [];
  const leftovers = removeSnapshotLeftovers(pvm);
  if (leftovers) done.push(leftovers);
  const keepsRunning = intent.operation === 'snapshot' || intent.operation === 'provision';
  if (keepsRunning && vmmRecord(pvm) && (await resumeGuest(pvm))) {
    done.push('the VM runs on');
  } else {
    const wasRunning = vmmRecord(pvm) !== undefined;
    await stopHub(pvm);
    await stopVmm(pvm);
    writeState(pvm.dir, { ...readState(pvm.dir), running: false });
    done.push(wasRunning ? 'its QEMU was ended, the VM is down' : 'the VM is down');
  }
  // The guest RAM file of a QEMU launch that was cut off (launchVmm removes it once mapped).
  for (const folder of [SHARED_MEMORY_DIR, pvm.run]) {
    rmSync(join(folder, `vmkit-project-${intent.pid}.ram`), { force: true });
  }
  for (const name of existsSync(pvm.dir) ? readdirSync(pvm.dir) : []) {
    if (name.endsWith('.restoring')) rmSync(join(pvm.dir, name), { force: true });
  }
  rmSync(intentPath(pvm.dir), { force: true });
  return done.join('; ');
}

/** Removes half-taken snapshots; puts back a replaced one whose successor never landed. */
function removeSnapshotLeftovers(pvm: ProjectVm): string | undefined {
  const root = snapshotsDir(pvm.dir);
  if (!existsSync(root)) return undefined;
  const removed: string[] = [];
  for (const name of readdirSync(root)) {
    const old = /^\.old-(.+)-[0-9a-f]{8}$/.exec(name);
    if (old?.[1] && !existsSync(join(root, old[1]))) {
      renameSync(join(root, name), join(root, old[1]));
      removed.push(`snapshot ${old[1]} put back`);
    } else if (name.startsWith('.taking-') || old) {
      rmSync(join(root, name), { recursive: true, force: true });
      removed.push(`${name} removed`);
    }
  }
  return removed.length > 0 ? removed.join(', ') : undefined;
}

/**
 * Cancels a migration QEMU may still carry on (it finishes one without its caller and then
 * leaves the guest paused), then resumes the guest. False when QEMU did not answer.
 */
async function resumeGuest(pvm: ProjectVm): Promise<boolean> {
  const attached = await projectVmms()
    .attach(pvm.vm.name, pvm.run)
    .catch(() => undefined);
  if (!attached) return false;
  try {
    await attached.abortWriteState();
    return true;
  } catch {
    return false;
  } finally {
    attached.detach();
  }
}

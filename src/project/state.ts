import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmkitError } from '../errors.js';
import { processStartTicks } from '../runtime/reaper.js';
import { ensurePrivateDir, PRIVATE_FILE } from '../util/private.js';

/**
 * The state of a project's VMs in `<project>/.vmkit/<vm>/`: `state.json` (ports, provision
 * hash, what was last synced), the data disk, snapshots. Every file is written whole (temporary
 * file, then rename); changes happen under the VM's lock.
 */
export interface VmState {
  /** Host ports by guest port, kept across up/down so that scripts can rely on them. */
  ports: Record<string, number>;
  provisionHash?: string;
  bootedAt?: string;
  /** Set while the VM is meant to run: a dead VMM then means it crashed. */
  running?: boolean;
}

export const projectStateDir = (root: string) => join(root, '.vmkit');
export const vmDir = (root: string, vm: string) => join(projectStateDir(root), vm);
export const dataDisk = (dir: string) => join(dir, 'data.qcow2');
/** The root overlay, for images that boot from a disk (the data disk is then the second). */
export const rootDisk = (dir: string) => join(dir, 'root.qcow2');
/** Where the data disk is mounted in the guest. */
export const DATA_MOUNT = '/work';
/** The data disk's device in the guest: after the root disk when the image has one. */
export const dataDeviceOf = (dir: string) => (existsSync(rootDisk(dir)) ? '/dev/vdb' : '/dev/vda');
export const snapshotsDir = (dir: string) => join(dir, 'snapshots');
/** The intent of a multi-step operation in progress (project/intent.ts). */
export const intentPath = (dir: string) => join(dir, 'intent.json');
export const syncManifestPath = (dir: string) => join(dir, 'synced.json');

const SOCKET_LIMIT = 107;

/**
 * Where the VM's QEMU keeps its sockets, record and logs: inside the VM folder when the socket
 * paths fit the 107-byte limit, else a short folder under the temp dir named after it.
 */
export function runDir(dir: string): string {
  const inside = join(dir, 'run');
  if (Buffer.byteLength(join(inside, 'xfer.sock')) <= SOCKET_LIMIT) return inside;
  return join(tmpdir(), `vmkit-${createHash('sha256').update(dir).digest('hex').slice(0, 16)}`);
}

/**
 * Creates `.vmkit/` with a .gitignore that ignores everything in it, and the VM's folders: all
 * 0700 whatever the umask, since its run folder holds QMP and the agent (root in the guest, and
 * `migrate exec:` on the host as this user). A run folder under the temp dir must be ours.
 */
export function ensureVmDir(root: string, vm: string): string {
  const top = projectStateDir(root);
  ensurePrivateDir(top);
  if (!existsSync(join(top, '.gitignore'))) writeFileAtomic(join(top, '.gitignore'), '*\n');
  const dir = vmDir(root, vm);
  ensurePrivateDir(dir);
  ensurePrivateDir(runDir(dir));
  return dir;
}

export function writeFileAtomic(path: string, data: string | Buffer): void {
  const partial = `${path}.${randomBytes(4).toString('hex')}.part`;
  try {
    writeFileSync(partial, data, { mode: PRIVATE_FILE });
    renameSync(partial, path);
  } catch (error) {
    rmSync(partial, { force: true });
    throw error;
  }
}

export function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

const statePath = (dir: string) => join(dir, 'state.json');
export const readState = (dir: string): VmState => readJson<VmState>(statePath(dir)) ?? { ports: {} };
export const writeState = (dir: string, state: VmState) =>
  writeFileAtomic(statePath(dir), `${JSON.stringify(state, null, 2)}\n`);

interface LockOwner {
  pid: number;
  startTicks: string;
  what: string;
}

/** Whether the process that wrote a lock still runs (same pid, same start time). */
function ownerAlive(owner: LockOwner | undefined): boolean {
  if (!owner || !Number.isInteger(owner.pid)) return false;
  const ticks = processStartTicks(owner.pid);
  return ticks !== undefined && (owner.startTicks === '' || ticks === owner.startTicks);
}

function mtimeMs(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

export class LockedError extends VmkitError {
  override name = 'LockedError';
}

/**
 * Takes the VM's lock (a file created with O_EXCL holding the owner's pid), runs `work`, frees
 * the lock. A lock whose owner is dead is taken over; a live owner makes this wait up to
 * `waitMs`, then fail naming the owner.
 */
export async function withLock<T>(dir: string, what: string, work: () => Promise<T>, waitMs = 0): Promise<T> {
  const release = await acquireLock(dir, what, waitMs);
  try {
    return await work();
  } finally {
    release();
  }
}

export async function acquireLock(dir: string, what: string, waitMs = 0): Promise<() => void> {
  const path = join(dir, 'lock');
  const deadline = Date.now() + waitMs;
  const mine: LockOwner = { pid: process.pid, startTicks: processStartTicks(process.pid) ?? '', what };
  for (;;) {
    try {
      const fd = openSync(path, 'wx', PRIVATE_FILE);
      try {
        writeSync(fd, JSON.stringify(mine));
      } finally {
        closeSync(fd);
      }
      return () => {
        if (readJson<LockOwner>(path)?.pid === process.pid) rmSync(path, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = readJson<LockOwner>(path);
    if (owner === undefined && existsSync(path) && Date.now() - mtimeMs(path) < 2000) {
      // Created but not yet written by its owner: look again in a moment.
    } else if (!ownerAlive(owner)) {
      // The owner died holding it: move it aside atomically, so that only one taker wins.
      const stale = `${path}.stale-${randomBytes(4).toString('hex')}`;
      try {
        renameSync(path, stale);
        const moved = readJson<LockOwner>(stale);
        if (moved && ownerAlive(moved)) renameSync(stale, path);
        else rmSync(stale, { force: true });
      } catch {}
      continue;
    }
    if (Date.now() >= deadline) {
      throw new LockedError(
        `${dir} is locked by process ${owner?.pid ?? '?'} (${owner?.what ?? 'starting'}); try again when it is done`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

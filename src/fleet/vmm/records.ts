import { chmodSync, existsSync, lstatSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DetachedFiles } from '../../backends/detached.js';
import { VmmStartError } from '../../errors.js';
import { ensureDirSync } from '../../util/files.js';
import { fleetVmms } from './vmms.js';

/**
 * What vmkit keeps about a VMM beside its folder, in `<folder>.records/`. As root the VMM runs
 * as its tenant's uid and owns its folder, so it can write anything there: a record of the pid
 * to signal, the cgroups to remove, a RAM delta to apply. Those live here instead, in a folder
 * of vmkit's uid (mode 0700) whose parent the VMM cannot write, outside its jail.
 */
/** vmkit's own folder beside a VMM's folder: what it acts on about that VMM. */
export const recordsDir = (dir: string) => `${dir}.records`;
export const vmmFiles = (dir: string): DetachedFiles => fleetVmms().files(recordsDir(dir));

/**
 * Makes the records folder (mode 0700, this process's uid). Its parent is vmkit's, so the VMM
 * cannot have put anything in its place; anything else found there is refused.
 */
export function ensureRecordsDir(dir: string): string {
  const records = recordsDir(dir);
  ensureDirSync(records, 0o700);
  const info = lstatSync(records);
  if (!info.isDirectory() || info.uid !== process.getuid?.()) {
    throw new VmmStartError(
      `${records} is not a folder of uid ${process.getuid?.()}: refusing to keep records in it`,
    );
  }
  chmodSync(records, 0o700);
  return records;
}

/** Writes a file of the records folder whole (through a rename). */
export function writeRecordFile(dir: string, name: string, text: string): void {
  const path = join(ensureRecordsDir(dir), name);
  writeFileSync(`${path}.part`, text, { mode: 0o600 });
  renameSync(`${path}.part`, path);
}

/** The device state of a sleep, written by the VMM (QEMU's `exec:cat`) into its own folder. */
export const sleepStatePath = (dir: string) => join(dir, 'sleep', 'state');
/** vmkit's part of a sleep state: `ram.delta`, then `base.json`, written last (the state is whole). */
export const sleepRecordsDir = (dir: string) => join(recordsDir(dir), 'sleep');
/** Whether the folder holds a whole sleep state: by vmkit's marker, never by a file the VMM can make. */
export const hasSleepState = (dir: string) =>
  existsSync(join(sleepRecordsDir(dir), 'base.json')) && existsSync(sleepStatePath(dir));
/**
 * Forgets the sleep state: vmkit's part at once (safe while the VMM runs); the device state in
 * the VMM's folder only with `vmmGone` (killVm ended it and all it forked), since removing a tree
 * the VMM's uid can change meanwhile could follow a link it swaps in.
 */
export function removeSleepState(dir: string, vmmGone: boolean): void {
  rmSync(sleepRecordsDir(dir), { recursive: true, force: true });
  if (vmmGone) rmSync(join(dir, 'sleep'), { recursive: true, force: true });
}

/**
 * A sleep state of an older vmkit kept all of it in the VMM's folder (`sleep/ram.delta` and
 * `sleep/base.json` written by root, `sleep/state` renamed last). With the VMM ended (nothing
 * of the tenant's uid runs to swap a name meanwhile), vmkit's
 * two files are moved into the records and kept only if they are still root's plain files (a
 * link or another file the VMM's uid put there is removed), so that such an instance still wakes.
 */
export function adoptOldSleepState(dir: string): void {
  const old = join(dir, 'sleep');
  if (existsSync(join(sleepRecordsDir(dir), 'base.json')) || !existsSync(join(old, 'base.json'))) return;
  // Not through a link: it could name another instance's records, whose delta would then wake here.
  if (!lstatSync(old).isDirectory()) return;
  const records = join(ensureRecordsDir(dir), 'sleep');
  ensureDirSync(records, 0o700);
  for (const name of ['ram.delta', 'base.json']) {
    const moved = join(records, name);
    try {
      renameSync(join(old, name), moved);
    } catch {
      continue;
    }
    const info = lstatSync(moved);
    if (!info.isFile() || info.uid !== process.getuid?.() || info.nlink !== 1) rmSync(moved, { force: true });
  }
  if (!existsSync(join(records, 'ram.delta'))) rmSync(join(records, 'base.json'), { force: true });
}

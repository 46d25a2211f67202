import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { processStartTicks } from '../runtime/reaper.js';
import { snapshotRoot } from './manifest.js';

/** Folders of snapshots interrupted while being taken or replaced, by a run now gone. */
export async function removeSnapshotLeftovers(): Promise<Array<{ id: string; reason: string }>> {
  const removed: Array<{ id: string; reason: string }> = [];
  for (const entry of await readdir(snapshotRoot()).catch(() => [] as string[])) {
    const owner = entry.match(/^\.taking-(\d+)-|\.old-(\d+)-/);
    const pid = Number(owner?.[1] ?? owner?.[2]);
    if (owner && processStartTicks(pid) === undefined) {
      await rm(join(snapshotRoot(), entry), { recursive: true, force: true });
      removed.push({ id: entry, reason: 'left over from an interrupted snapshot' });
    }
  }
  return removed;
}

import { existsSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { qemuVersion } from '../hypervisor/qemu.js';
import { SNAPSHOT_FORMAT, Snapshot, type SnapshotManifest, snapshotRoot } from './snapshot.js';

/** Every snapshot in the store, newest first. Folders without a readable manifest are skipped. */
export async function listSnapshots(): Promise<Snapshot[]> {
  const root = snapshotRoot();
  const snapshots: Snapshot[] = [];
  for (const entry of await readdir(root).catch(() => [] as string[])) {
    if (entry.startsWith('.') || entry.includes('.old-')) continue;
    const manifest = await readManifest(join(root, entry));
    if (manifest) snapshots.push(new Snapshot(manifest, join(root, entry)));
  }
  return snapshots.sort((a, b) => b.manifest.createdAt.localeCompare(a.manifest.createdAt));
}

/** A snapshot by id, or the newest one with that name. */
export async function openSnapshot(idOrName: string): Promise<Snapshot> {
  const dir = join(snapshotRoot(), idOrName);
  if (!idOrName.includes('/') && existsSync(dir)) {
    const manifest = await readManifest(dir);
    if (manifest) return new Snapshot(manifest, dir);
  }
  const byName = (await listSnapshots()).find((snapshot) => snapshot.name === idOrName);
  if (!byName) throw new ConfigError(`no snapshot ${JSON.stringify(idOrName)} (see: vmkit snapshot list)`);
  return byName;
}

export async function removeSnapshot(snapshot: Snapshot): Promise<void> {
  await rm(snapshot.dir, { recursive: true, force: true });
}

/** Why a snapshot cannot be restored on this host, or undefined when it can. */
export async function unrestorableReason(manifest: SnapshotManifest): Promise<string | undefined> {
  if (manifest.format !== SNAPSHOT_FORMAT) return `made by another vmkit version (format ${manifest.format})`;
  const here = await qemuVersion().catch(() => 'QEMU not installed');
  if (manifest.identity.qemuVersion !== here)
    return `taken with another QEMU (${manifest.identity.qemuVersion})`;
  for (const file of [manifest.image.kernel, manifest.image.initrd]) {
    if (!existsSync(file)) return `its image is gone (${file})`;
  }
  return undefined;
}

/** Removes snapshots this host cannot restore (or all of them); returns what was removed and why. */
export async function pruneSnapshots(
  options: { all?: boolean } = {},
): Promise<Array<{ id: string; reason: string }>> {
  const removed: Array<{ id: string; reason: string }> = [];
  for (const snapshot of await listSnapshots()) {
    const reason = options.all ? 'all were asked for' : await unrestorableReason(snapshot.manifest);
    if (!reason) continue;
    await removeSnapshot(snapshot);
    removed.push({ id: snapshot.id, reason });
  }
  // Leftovers of snapshots interrupted while being taken or replaced, by a process now gone.
  for (const entry of await readdir(snapshotRoot()).catch(() => [] as string[])) {
    const owner = entry.match(/^\.taking-(\d+)-|\.old-(\d+)-/);
    const pid = Number(owner?.[1] ?? owner?.[2]);
    if (owner && !processExists(pid)) {
      await rm(join(snapshotRoot(), entry), { recursive: true, force: true });
      removed.push({ id: entry, reason: 'left over from an interrupted snapshot' });
    }
  }
  return removed;
}

async function readManifest(dir: string): Promise<SnapshotManifest | undefined> {
  try {
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as SnapshotManifest;
    return typeof manifest.id === 'string' && typeof manifest.format === 'number' ? manifest : undefined;
  } catch {
    return undefined;
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

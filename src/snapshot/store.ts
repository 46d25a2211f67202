import { existsSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { defaultRuntime, type Runtime } from '../runtime/runtime.js';
import { removeSnapshotLeftovers } from './leftovers.js';
import { BOOT_CACHE_PREFIX, type SnapshotManifest, snapshotRoot } from './manifest.js';

export { removeSnapshotLeftovers } from './leftovers.js';

import { requireSnapshot, Snapshot } from './snapshot.js';
import { restorability } from './verify.js';

/**
 * Every snapshot in the store, newest first, but the boot cache's entries (`vmkit cache ls`).
 * Folders without a readable manifest are skipped.
 */
export async function listSnapshots(): Promise<Snapshot[]> {
  const root = snapshotRoot();
  const snapshots: Snapshot[] = [];
  for (const entry of await readdir(root).catch(() => [] as string[])) {
    if (entry.startsWith('.') || entry.includes('.old-') || entry.startsWith(BOOT_CACHE_PREFIX)) continue;
    const manifest = await readManifest(join(root, entry));
    if (manifest) snapshots.push(new Snapshot(manifest, join(root, entry)));
  }
  return snapshots.sort((a, b) => b.manifest.createdAt.localeCompare(a.manifest.createdAt));
}

/** A snapshot by id, or the newest one with that name. */
export async function openSnapshot(idOrName: string): Promise<Snapshot> {
  if (typeof idOrName !== 'string' || idOrName === '') {
    throw new ConfigError(`openSnapshot needs a snapshot id or name, not ${JSON.stringify(idOrName)}`);
  }
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
  requireSnapshot('removeSnapshot', snapshot);
  await rm(snapshot.dir, { recursive: true, force: true });
}

/** Why this host cannot restore a snapshot (integrity included), or nothing when it can. */
export async function snapshotProblems(
  snapshot: Snapshot,
  runtime: Runtime = defaultRuntime(),
): Promise<string[]> {
  requireSnapshot('snapshotProblems', snapshot);
  return restorability(snapshot, runtime);
}

/** Removes snapshots this host cannot restore (or all of them); returns what was removed and why. */
export async function pruneSnapshots(
  options: { all?: boolean; runtime?: Runtime } = {},
): Promise<Array<{ id: string; reason: string }>> {
  const removed: Array<{ id: string; reason: string }> = [];
  for (const snapshot of await listSnapshots()) {
    const reason = options.all
      ? 'all were asked for'
      : (await snapshotProblems(snapshot, options.runtime)).join('; ');
    if (!reason) continue;
    await removeSnapshot(snapshot);
    removed.push({ id: snapshot.id, reason });
  }
  removed.push(...(await removeSnapshotLeftovers()));
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

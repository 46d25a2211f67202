import { readdirSync, readFileSync } from 'node:fs';
import { readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { MachineOptions } from '../machine/options.js';
import type { ResolvedMachine } from '../machine/start.js';
import type { Runtime } from '../runtime/runtime.js';
import { guestFilesDir } from '../util/paths.js';
import { BOOT_CACHE_PREFIX, hashOf, SNAPSHOT_FORMAT, snapshotRoot } from './manifest.js';
import type { Snapshot } from './snapshot.js';
import { openSnapshot } from './store.js';
import { restorability } from './verify.js';

/**
 * The boot cache: for each machine configuration, the state of its guest right after its first
 * boot (agent up, set-up done, boot settled), kept as a snapshot in the snapshot store under the
 * name `boot.<image>`, so that every later start of that configuration is a restore.
 */

/** Bumped when what a boot cache entry holds changes in a way its key does not show. */
const BOOT_CACHE_FORMAT = 2;

/** The console output of an entry's boot, in its folder: the start of a restored machine's console. */
export const BOOT_CONSOLE = 'boot-console.log';

/** Default size cap of the boot cache: VMKIT_BOOT_CACHE_MIB overrides it. */
export const DEFAULT_BOOT_CACHE_MIB = 4096;

/** Why a machine's start cannot go through the boot cache, or undefined when it can. */
export function bootCacheRefusal(options: MachineOptions, resolved: ResolvedMachine): string | undefined {
  const { backend, config } = resolved;
  if (options.fresh) return 'fresh: true asks for a real boot';
  if (process.env.VMKIT_BOOT_CACHE === 'off') return 'VMKIT_BOOT_CACHE=off';
  if (backend.simulated) return `the ${backend.title} backend simulates its guests`;
  if (!backend.capabilities.snapshot || !backend.capabilities.cowFork)
    return `the ${backend.title} backend cannot save and share a booted state`;
  if (config.media) return 'media you bring are booted, never cached';
  if (config.backdoor === false) return 'a guest without the backdoor is booted, never cached';
  if (config.extraDisks?.length) return 'extra disks: their contents are not part of the cache key';
  // Login prompts on the virtual terminals were drawn at boot, with the boot's hostname.
  if (config.display) return 'a screen shows what its boot drew: a machine with one is booted';
  return undefined;
}

/**
 * The id of a configuration's entry: everything that shapes the guest when its state is saved
 * (image content, memory, CPUs, disks, NICs, devices, kernel command line, guest profile and
 * vmkit's guest files, VMM version, accelerator), and nothing a start re-applies (name, MACs,
 * addresses, hostname, hosts lines, host ports).
 */
export async function bootCacheId(resolved: ResolvedMachine): Promise<string> {
  const { config, backend, runtime, profile } = resolved;
  const key = hashOf({
    format: BOOT_CACHE_FORMAT,
    snapshotFormat: SNAPSHOT_FORMAT,
    backend: config.backend,
    vmmVersion: await backend.version(runtime),
    accel: config.accel,
    image: config.image.key,
    cmdline: config.image.cmdline,
    profile: profile.name,
    guestFiles: guestFilesDigest(),
    memoryMiB: config.memoryMiB,
    cpus: config.cpus,
    nics: config.nics,
    disks: config.disks.map((disk) => disk.sizeMiB),
    display: config.display === true,
    qemuArgs: config.qemuArgs,
    hostNic: config.hostNic
      ? {
          internet: config.hostNic.internet,
          services: config.hostNic.services.map((service) => service.guestAddress),
        }
      : null,
  });
  const image = config.image.name
    .toLowerCase()
    .replace(/[^a-z0-9_.-]+/g, '-')
    .slice(0, 24);
  return `${BOOT_CACHE_PREFIX}${image || 'image'}-${key.slice(0, 16)}`;
}

/** What vmkit runs in its guests (guest/profiles/): a change there changes every key. */
export function guestFilesDigest(): string {
  const dir = join(guestFilesDir(), 'profiles');
  const files = readdirSync(dir).sort();
  return hashOf(files.map((file) => [file, readFileSync(join(dir, file), 'utf8')]));
}

/**
 * The entry of `id` when this host can restore it; a damaged or unusable one is removed and
 * `warn` is told why, so that the machine is booted for real instead.
 */
export async function usableEntry(
  id: string,
  resolved: Pick<ResolvedMachine, 'runtime' | 'accel'>,
  warn: (line: string) => void,
): Promise<Snapshot | undefined> {
  const dir = join(snapshotRoot(), id);
  const present = await stat(join(dir, 'manifest.json')).catch(() => undefined);
  if (!present) return undefined;
  const entry = await openSnapshot(id).catch(() => undefined);
  const problems = entry
    ? await restorability(entry, resolved.runtime, resolved.accel.accel)
    : ['its manifest is unreadable'];
  if (entry && problems.length === 0) {
    await markUsed(dir);
    return entry;
  }
  warn(`boot cache: entry ${id} removed, booting for real: ${problems.join('; ')}`);
  await rm(dir, { recursive: true, force: true });
  return undefined;
}

/** Records a use of an entry: least recently used entries go first when the cache is full. */
async function markUsed(dir: string): Promise<void> {
  const now = new Date();
  await utimes(join(dir, USED), now, now).catch(() => writeFile(join(dir, USED), '').catch(() => {}));
}

const USED = 'used';

export interface BootCacheEntry {
  id: string;
  image: string;
  memoryMiB: number;
  createdAt: string;
  lastUsedAt: string;
  /** Bytes the entry takes on disk (sparse files count what they hold). */
  bytes: number;
  dir: string;
}

/** Every entry of the boot cache, most recently used first. */
export async function listBootCache(): Promise<BootCacheEntry[]> {
  return (await bootCacheSnapshots()).map(({ entry }) => entry);
}

/** Each entry with the snapshot it was read from (its manifest read once). */
async function bootCacheSnapshots(): Promise<Array<{ entry: BootCacheEntry; snapshot: Snapshot }>> {
  const root = snapshotRoot();
  const entries: Array<{ entry: BootCacheEntry; snapshot: Snapshot }> = [];
  for (const id of await readdir(root).catch(() => [] as string[])) {
    if (!id.startsWith(BOOT_CACHE_PREFIX) || id.includes('.old-')) continue;
    const snapshot = await openSnapshot(id).catch(() => undefined);
    if (!snapshot || snapshot.id !== id) continue;
    const dir = join(root, id);
    const used = await stat(join(dir, USED)).catch(() => undefined);
    entries.push({
      snapshot,
      entry: {
        id,
        image: snapshot.manifest.image.name,
        memoryMiB: snapshot.manifest.identity.memoryMiB,
        createdAt: snapshot.manifest.createdAt,
        lastUsedAt: used ? used.mtime.toISOString() : snapshot.manifest.createdAt,
        bytes: await diskUse(dir),
        dir,
      },
    });
  }
  return entries.sort((a, b) => b.entry.lastUsedAt.localeCompare(a.entry.lastUsedAt));
}

async function diskUse(dir: string): Promise<number> {
  let bytes = 0;
  for (const file of await readdir(dir).catch(() => [] as string[])) {
    const info = await stat(join(dir, file)).catch(() => undefined);
    if (info?.isFile()) bytes += info.blocks * 512;
  }
  return bytes;
}

/** The boot cache's size cap in bytes: VMKIT_BOOT_CACHE_MIB, or the default. */
export function bootCacheCap(): number {
  const wanted = Number(process.env.VMKIT_BOOT_CACHE_MIB);
  return (Number.isFinite(wanted) && wanted >= 0 ? wanted : DEFAULT_BOOT_CACHE_MIB) * 1024 * 1024;
}

/**
 * Removes entries this host cannot restore, then the least recently used ones until the cache
 * fits `maxBytes` (`keep` is never removed: the entry just saved). Returns what went and why.
 */
export async function pruneBootCache(
  options: { maxBytes?: number; keep?: string; all?: boolean; runtime?: Runtime } = {},
): Promise<Array<{ id: string; bytes: number; reason: string }>> {
  const maxBytes = options.maxBytes ?? bootCacheCap();
  const removed: Array<{ id: string; bytes: number; reason: string }> = [];
  const kept: BootCacheEntry[] = [];
  for (const { entry, snapshot } of await bootCacheSnapshots()) {
    let reason = options.all ? 'all were asked for' : '';
    if (!reason && options.runtime) {
      reason = (await restorability(snapshot, options.runtime)).join('; ');
    }
    if (reason && entry.id !== options.keep) {
      await rm(entry.dir, { recursive: true, force: true });
      removed.push({ id: entry.id, bytes: entry.bytes, reason });
    } else kept.push(entry);
  }
  let total = kept.reduce((sum, entry) => sum + entry.bytes, 0);
  for (const entry of [...kept].reverse()) {
    if (total <= maxBytes) break;
    if (entry.id === options.keep) continue;
    await rm(entry.dir, { recursive: true, force: true });
    total -= entry.bytes;
    removed.push({
      id: entry.id,
      bytes: entry.bytes,
      reason: `least recently used; the cache holds at most ${Math.round(maxBytes / 2 ** 20)} MiB`,
    });
  }
  return removed;
}

/** Empties the boot cache; returns what was removed. */
export function clearBootCache(): Promise<Array<{ id: string; bytes: number; reason: string }>> {
  return pruneBootCache({ all: true, maxBytes: 0 });
}

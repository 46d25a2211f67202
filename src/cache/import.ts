import { chmod, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { AccelRequest } from '../backends/accel.js';
import { ConfigError } from '../errors.js';
import type { ImageManifest } from '../images/types.js';
import type { Runtime } from '../runtime/runtime.js';
import type { SnapshotManifest } from '../snapshot/manifest.js';
import { recordVerified, restorability } from '../snapshot/verify.js';
import { ensurePrivateDir, PRIVATE_DIR } from '../util/private.js';
import { makeScratch, sweepScratch } from '../util/scratch.js';
import { sparseDigest } from '../util/sparse.js';
import { unpackUntrusted } from '../util/untrusted-archive.js';
import { type ArchiveIndex, archiveIndex, type ImportOutcome, INDEX_FILE } from './archive-index.js';
import { readJson } from './read-json.js';

export interface ImportOptions {
  /** The cache to import into (default: `cacheDir()`). */
  cacheDir: string;
  /** Asks the backends their versions and the host its accelerator. */
  runtime: Runtime;
  /** The accelerator snapshots must have been taken under (default: what `auto` picks here). */
  accel?: AccelRequest;
}

const SCRATCH = '.import-';

/**
 * Imports an archive of `exportCache` into the cache. The archive is unpacked as untrusted input
 * into a scratch folder inside the cache; each entry is then checked (image files against the
 * index's digests, snapshots against their manifests' digests and whether this host can restore
 * them: its QEMU version, its accelerator, their image) and renamed into its store whole, or
 * refused with the reason. Entries already in the store are left as they are. Snapshots' image
 * paths are rewritten to this cache's images folder (images are found by key, wherever the cache).
 */
export async function importCache(file: string, options: ImportOptions): Promise<ImportOutcome[]> {
  const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
    throw new ConfigError(`${file}: cannot read it: ${error.code ?? error.message}`);
  });
  if (!info.isFile()) throw new ConfigError(`${file}: not a file`);
  const root = options.cacheDir;
  ensurePrivateDir(root);
  await sweepScratch(root, SCRATCH);
  const scratch = await makeScratch(root, SCRATCH);
  try {
    await unpackUntrusted(file, scratch).catch((error: Error) => {
      throw new ConfigError(`${file}: not a readable tar archive: ${error.message}`);
    });
    const index = archiveIndex.safeParse(await readJson(join(scratch, INDEX_FILE)));
    if (!index.success)
      throw new ConfigError(`${file}: not an archive of vmkit cache export (no valid ${INDEX_FILE} in it)`);
    const outcomes: ImportOutcome[] = [];
    for (const image of index.data.images) outcomes.push(await importImage(image, scratch, root));
    for (const snapshot of index.data.snapshots)
      outcomes.push(await importSnapshot(snapshot, scratch, root, options));
    return outcomes;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

type IndexImage = ArchiveIndex['images'][number];
type IndexSnapshot = ArchiveIndex['snapshots'][number];

async function importImage(image: IndexImage, scratch: string, root: string): Promise<ImportOutcome> {
  const outcome = (result: ImportOutcome['result'], reason?: string): ImportOutcome => ({
    kind: 'image',
    id: image.key,
    name: image.name,
    result,
    ...(reason ? { reason } : {}),
  });
  const target = join(root, 'images', image.key);
  if (await readJson(join(target, 'manifest.json'))) return outcome('present');
  const staged = join(scratch, 'images', image.key);
  const manifest = await readJson<ImageManifest>(join(staged, 'manifest.json'));
  if (manifest?.key !== image.key)
    return outcome('refused', 'its manifest.json is missing or names another key');
  const needed = [manifest.kernel, manifest.initrd, ...(manifest.disk ? [manifest.disk] : [])];
  const unlisted = needed.find((name) => !image.files[name]);
  if (unlisted) return outcome('refused', `the archive lists no digest for its file ${unlisted}`);
  const problem = await checkFiles(staged, image.files, ['manifest.json']);
  if (problem) return outcome('refused', problem);
  return (await moveInto(staged, target)) ? outcome('imported') : outcome('present');
}

async function importSnapshot(
  snapshot: IndexSnapshot,
  scratch: string,
  root: string,
  options: ImportOptions,
): Promise<ImportOutcome> {
  const outcome = (result: ImportOutcome['result'], reason?: string): ImportOutcome => ({
    kind: 'snapshot',
    id: snapshot.id,
    name: snapshot.name,
    result,
    ...(reason ? { reason } : {}),
  });
  const target = join(root, 'snapshots', snapshot.id);
  if (await readJson(join(target, 'manifest.json'))) return outcome('present');
  const staged = join(scratch, 'snapshots', snapshot.id);
  const manifest = await readJson<SnapshotManifest>(join(staged, 'manifest.json'));
  if (manifest?.id !== snapshot.id || typeof manifest.files !== 'object' || !manifest.image?.key)
    return outcome('refused', 'its manifest.json is missing, damaged or names another snapshot');
  const extra = await unexpected(staged, [...Object.keys(manifest.files), 'manifest.json']);
  if (extra) return outcome('refused', extra);
  // The image's files are where this cache keeps images of that key, not where the exporter did.
  const dir = join(root, 'images', manifest.image.key);
  const { kernel, initrd, disk } = manifest.image;
  const image = {
    ...manifest.image,
    dir,
    kernel: join(dir, basename(kernel)),
    initrd: join(dir, basename(initrd)),
    ...(disk ? { disk: join(dir, basename(disk)) } : {}),
  };
  const rewritten: SnapshotManifest = { ...manifest, image };
  await writeFile(join(staged, 'manifest.json'), JSON.stringify(rewritten, null, 2));
  const damage = await sparseCopies(staged, manifest.files);
  if (damage) return outcome('refused', damage);
  const reasons = await restorability({ manifest: rewritten, dir: staged }, options.runtime, options.accel);
  if (reasons.length) return outcome('refused', reasons.join('; '));
  return (await moveInto(staged, target)) ? outcome('imported') : outcome('present');
}

/**
 * tar writes guest RAM back dense: each file is copied sparse (its zero blocks as holes) while its
 * digest is checked, and recorded as verified, so that restorability does not read it again.
 */
async function sparseCopies(dir: string, files: SnapshotManifest['files']): Promise<string | undefined> {
  for (const [name, expected] of Object.entries(files)) {
    const copy = join(dir, `.sparse-${name}`);
    const found = await sparseDigest(join(dir, name), copy).catch(() => undefined);
    if (!found) return `damaged: ${name} is missing from the archive`;
    if (found.bytes !== expected.bytes)
      return `damaged: ${name} has ${found.bytes} bytes, not ${expected.bytes}`;
    if (found.digest !== expected.digest) return `tampered with: ${name} does not match its checksum`;
    await rename(copy, join(dir, name));
  }
  await recordVerified(dir);
  return undefined;
}

/** Why a folder's files do not match `files` (size, digest, missing or extra ones), or nothing. */
async function checkFiles(
  dir: string,
  files: Record<string, { digest: string; bytes: number }>,
  alsoAllowed: string[],
): Promise<string | undefined> {
  const extra = await unexpected(dir, [...Object.keys(files), ...alsoAllowed]);
  if (extra) return extra;
  for (const [name, expected] of Object.entries(files)) {
    const found = await sparseDigest(join(dir, name)).catch(() => undefined);
    if (!found) return `damaged: ${name} is missing from the archive`;
    if (found.bytes !== expected.bytes)
      return `damaged: ${name} has ${found.bytes} bytes, not ${expected.bytes}`;
    if (found.digest !== expected.digest) return `damaged: ${name} does not match its digest`;
  }
  return undefined;
}

async function unexpected(dir: string, allowed: string[]): Promise<string | undefined> {
  const present = await readdir(dir).catch(() => [] as string[]);
  const extra = present.filter((name) => !allowed.includes(name));
  return extra.length ? `holds files its manifest does not list: ${extra.join(', ')}` : undefined;
}

/** Renames a checked folder into its store; false when another process put that entry there first. */
async function moveInto(staged: string, target: string): Promise<boolean> {
  ensurePrivateDir(join(target, '..'));
  await chmod(staged, PRIVATE_DIR);
  try {
    await rename(staged, target);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return false;
    throw error;
  }
}

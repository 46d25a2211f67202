import { mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { create } from 'tar';
import { ConfigError } from '../errors.js';
import type { ImageManifest } from '../images/types.js';
import type { SnapshotManifest } from '../snapshot/manifest.js';
import { sparseDigest } from '../util/sparse.js';
import { type ArchiveIndex, CACHE_PARTS, type CachePart, INDEX_FILE } from './archive-index.js';
import { readJson } from './read-json.js';

export interface ExportOptions {
  /** The cache to export (default: `cacheDir()`). */
  cacheDir: string;
  /** Only images or only snapshots (default: both). */
  only?: CachePart;
}

export interface ExportResult {
  file: string;
  images: string[];
  snapshots: string[];
  bytes: number;
}

/** Entries of a store: its folders with a readable manifest (no scratch or replaced ones). */
async function entries<T>(root: string): Promise<Array<{ name: string; manifest: T }>> {
  const found: Array<{ name: string; manifest: T }> = [];
  for (const name of (await readdir(root).catch(() => [] as string[])).sort()) {
    if (name.startsWith('.') || /\.old-\d+-/.test(name)) continue; // scratch, or replaced
    const manifest = await readJson<T>(join(root, name, 'manifest.json'));
    if (manifest) found.push({ name, manifest });
  }
  return found;
}

/**
 * Writes the cache's images and snapshots into one tar file (gzipped when the name ends in .gz or
 * .tgz): `vmkit-cache.json` first (what it holds, and the digest of every image file), then
 * `images/<key>/` and `snapshots/<id>/` as they are in the store, minus host-specific files
 * (`verified.json`). Written beside `file` and renamed onto it, so a failed export leaves nothing.
 */
export async function exportCache(file: string, options: ExportOptions): Promise<ExportResult> {
  if (options.only !== undefined && !CACHE_PARTS.includes(options.only))
    throw new ConfigError(`--only ${options.only}: use images or snapshots`);
  const target = resolve(file);
  const parent = await stat(dirname(target)).catch(() => undefined);
  if (!parent?.isDirectory()) throw new ConfigError(`${file}: the folder ${dirname(target)} does not exist`);
  const root = options.cacheDir;
  const index: ArchiveIndex = { format: 1, createdAt: new Date().toISOString(), images: [], snapshots: [] };
  const paths: string[] = [];
  if (options.only !== 'snapshots') {
    for (const { name, manifest } of await entries<ImageManifest>(join(root, 'images'))) {
      const files: Record<string, { digest: string; bytes: number }> = {};
      for (const entry of (await readdir(join(root, 'images', name))).sort()) {
        if (entry === 'manifest.json') continue;
        const { digest, bytes } = await sparseDigest(join(root, 'images', name, entry));
        files[entry] = { digest, bytes };
        paths.push(`images/${name}/${entry}`);
      }
      paths.push(`images/${name}/manifest.json`);
      index.images.push({ key: name, name: manifest.name, files });
    }
  }
  if (options.only !== 'images') {
    for (const { name, manifest } of await entries<SnapshotManifest>(join(root, 'snapshots'))) {
      if (manifest.id !== name || typeof manifest.files !== 'object') continue;
      paths.push(
        `snapshots/${name}/manifest.json`,
        ...Object.keys(manifest.files).map((f) => `snapshots/${name}/${f}`),
      );
      index.snapshots.push({ id: name, name: manifest.name, imageKey: manifest.image?.key ?? '' });
    }
  }
  // The index is packed alone first and then taken in as an archive (@file): it sits first in the
  // archive, under its own name, without a file of vmkit's own in the user's cache folder.
  const staging = join(dirname(target), `.${basename(target)}.${process.pid}.tmp`);
  const indexDir = await mkdtemp(join(tmpdir(), 'vmkit-export-'));
  try {
    await writeFile(join(indexDir, INDEX_FILE), `${JSON.stringify(index, null, 2)}\n`);
    await create({ file: join(indexDir, 'index.tar'), cwd: indexDir, portable: true }, [INDEX_FILE]);
    await create(
      { file: staging, cwd: root, gzip: /\.(tgz|gz)$/.test(target), portable: true, noDirRecurse: true },
      [`@${join(indexDir, 'index.tar')}`, ...paths],
    );
    await rename(staging, target);
  } finally {
    await rm(indexDir, { recursive: true, force: true });
    await rm(staging, { force: true });
  }
  return {
    file: target,
    images: index.images.map((image) => image.key),
    snapshots: index.snapshots.map((snapshot) => snapshot.id),
    bytes: (await stat(target)).size,
  };
}

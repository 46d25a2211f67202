import { z } from 'zod';

/** The name of the index every cache archive starts with. */
export const INDEX_FILE = 'vmkit-cache.json';

/** What `vmkit cache export` can carry: `images`, `snapshots`, or both. */
export type CachePart = 'images' | 'snapshots';
export const CACHE_PARTS: readonly CachePart[] = ['images', 'snapshots'];

// One path component that cannot climb out of a store or hide as a scratch folder.
const entryName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'must be a plain folder name');
const fileRecord = z.object({
  digest: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.number().int().nonnegative(),
});

export const archiveIndex = z.object({
  format: z.literal(1),
  createdAt: z.string(),
  images: z.array(
    z.object({
      key: entryName,
      name: z.string(),
      /** Every file of the image folder but manifest.json, with its sparseDigest. */
      files: z.record(entryName, fileRecord),
    }),
  ),
  snapshots: z.array(
    z.object({
      id: entryName,
      name: z.string(),
      /** The image it boots from, shipped in the same archive or expected in the importer's cache. */
      imageKey: z.string(),
    }),
  ),
});

/** `vmkit-cache.json`: what the archive holds, and the digests of image files. */
export type ArchiveIndex = z.infer<typeof archiveIndex>;

/** What one import did with each entry of the archive. */
export interface ImportOutcome {
  kind: 'image' | 'snapshot';
  /** The image key or snapshot id. */
  id: string;
  name: string;
  result: 'imported' | 'present' | 'refused';
  /** Why it was refused. */
  reason?: string;
}

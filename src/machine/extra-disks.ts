import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { z } from 'zod';
import type { ExtraDisk } from '../backends/backend.js';
import { ConfigError } from '../errors.js';

export type { ExtraDisk } from '../backends/backend.js';

/** How many extra disks a machine may have. */
export const MAX_EXTRA_DISKS = 8;

/** A letter, then letters, digits, '_' and '-': at most 20, what a virtio disk's serial holds. */
const SERIAL = /^[A-Za-z][A-Za-z0-9_-]{0,19}$/;

export const extraDiskSchema = z
  .object({
    path: z.string({ error: 'must be a file path' }).min(1, { error: 'must not be empty' }),
    format: z.enum(['raw', 'qcow2'], { error: 'must be raw or qcow2' }),
    readOnly: z.boolean({ error: 'must be true or false' }).optional(),
    serial: z.string({ error: 'must be a string' }).regex(SERIAL, {
      error: 'must be a letter, then letters, digits, _ and -: 20 at most',
    }),
  })
  .strict();

export const extraDisksSchema = z
  .array(extraDiskSchema)
  .max(MAX_EXTRA_DISKS, { error: `at most ${MAX_EXTRA_DISKS} extra disks` })
  .refine((disks) => new Set(disks.map((disk) => disk.serial)).size === disks.length, {
    error: 'each extra disk needs a serial of its own',
  });

/**
 * Checks that each extra disk's file is there, a regular file, readable, and writable unless it
 * is read-only, and that no file is attached twice. Returns them with absolute paths, so that a
 * snapshot's restore attaches the same files from any folder.
 */
export async function resolveExtraDisks(
  disks: ExtraDisk[],
  where = (index: number) => `startMachine options: extraDisks[${index}].path`,
): Promise<ExtraDisk[]> {
  const resolved: ExtraDisk[] = [];
  for (const [index, disk] of disks.entries()) {
    const what = where(index);
    const path = resolve(disk.path);
    const info = await stat(path).catch((error: NodeJS.ErrnoException) => {
      throw new ConfigError(`${what}: cannot use ${disk.path}: ${error.code ?? error.message}`);
    });
    if (!info.isFile()) throw new ConfigError(`${what}: ${disk.path} is not a regular file`);
    const mode = disk.readOnly ? constants.R_OK : constants.R_OK | constants.W_OK;
    await access(path, mode).catch(() => {
      throw new ConfigError(
        `${what}: ${disk.path} is not ${disk.readOnly ? 'readable' : 'readable and writable'}`,
      );
    });
    if (resolved.some((other) => other.path === path))
      throw new ConfigError(`${what}: ${disk.path} is already attached as another extra disk`);
    resolved.push({ ...disk, path });
  }
  return resolved;
}

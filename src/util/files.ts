import { mkdirSync, statSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Creates a folder and its missing parents, one level at a time. Node's recursive mkdir can spin
 * without end under /proc (ENOENT for a path whose parent exists); this fails at once instead.
 */
export async function ensureDir(path: string): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (info?.isDirectory()) return;
  const parent = dirname(path);
  if (parent !== path) await ensureDir(parent);
  await mkdir(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EEXIST') throw error;
  });
}

/** ensureDir, synchronously; `mode` applies to the folders it creates. */
export function ensureDirSync(path: string, mode?: number): void {
  if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) return;
  const parent = dirname(path);
  if (parent !== path) ensureDirSync(parent, mode);
  try {
    mkdirSync(path, mode === undefined ? undefined : { mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}

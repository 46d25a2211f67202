import { createHash } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensurePrivateDir } from '../util/private.js';
import { makeScratch, sweepScratch } from '../util/scratch.js';

/** Content-addressed folders: one per key, created whole or not at all. */
export class ContentStore {
  constructor(readonly root: string) {}

  static key(inputs: unknown): string {
    return createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 32);
  }

  pathOf(key: string): string {
    return join(this.root, key);
  }

  async manifest<T>(key: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(join(this.pathOf(key), 'manifest.json'), 'utf8')) as T;
    } catch {
      return undefined;
    }
  }

  /**
   * Returns the entry for `key`, building it first when missing. The build writes into a private
   * scratch folder that is renamed into place, so concurrent builders never see a half-built
   * entry; when two race, the first rename wins and the other's work is discarded.
   */
  async ensure<T extends object>(key: string, build: (scratch: string) => Promise<T>): Promise<T> {
    const existing = await this.manifest<T>(key);
    if (existing) return existing;
    // Its entries are booted (and run as root in guests): only its owner may add or swap one.
    ensurePrivateDir(this.root);
    await sweepScratch(this.root, '.building-');
    const scratch = await makeScratch(this.root, '.building-');
    try {
      const manifest = await build(scratch);
      await writeFile(join(scratch, 'manifest.json'), JSON.stringify(manifest, null, 2));
      try {
        await rename(scratch, this.pathOf(key));
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
      }
      return (await this.manifest<T>(key)) ?? manifest;
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }
}

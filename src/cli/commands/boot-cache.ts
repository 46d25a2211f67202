import { ConfigError } from '../../errors.js';
import { Runtime } from '../../runtime/runtime.js';
import { bootCacheCap, clearBootCache, listBootCache, pruneBootCache } from '../../snapshot/boot-cache.js';
import { snapshotRoot } from '../../snapshot/manifest.js';

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** `vmkit cache ls`: the boot cache's entries, most recently used first. */
export async function listBootCacheCommand(json: boolean): Promise<void> {
  const entries = await listBootCache();
  const total = entries.reduce((sum, entry) => sum + entry.bytes, 0);
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ dir: snapshotRoot(), capBytes: bootCacheCap(), totalBytes: total, entries }, null, 2)}\n`,
    );
    return;
  }
  if (entries.length === 0) {
    process.stdout.write(`the boot cache is empty (${snapshotRoot()})\n`);
    return;
  }
  for (const entry of entries) {
    process.stdout.write(
      `${entry.id}\t${entry.image}, ${entry.memoryMiB} MiB\tlast used ${entry.lastUsedAt}\t${mib(entry.bytes)}\n`,
    );
  }
  process.stdout.write(`${entries.length} entries, ${mib(total)} of at most ${mib(bootCacheCap())}\n`);
}

/** `vmkit cache prune`: entries this host cannot restore, then the least recently used beyond the cap. */
export async function pruneBootCacheCommand(maxMib: string | undefined): Promise<void> {
  let maxBytes: number | undefined;
  if (maxMib !== undefined) {
    if (!/^\d+$/.test(maxMib))
      throw new ConfigError(`--max-mib takes a whole number of MiB, not ${JSON.stringify(maxMib)}`);
    maxBytes = Number(maxMib) * 2 ** 20;
  }
  await using runtime = new Runtime();
  report(await pruneBootCache({ runtime, ...(maxBytes !== undefined ? { maxBytes } : {}) }));
}

/** `vmkit cache clear`. */
export async function clearBootCacheCommand(): Promise<void> {
  report(await clearBootCache());
}

function report(removed: Array<{ id: string; bytes: number; reason: string }>): void {
  for (const { id, bytes, reason } of removed)
    process.stdout.write(`removed ${id} (${mib(bytes)}): ${reason}\n`);
  if (removed.length === 0) process.stdout.write('nothing to remove\n');
}

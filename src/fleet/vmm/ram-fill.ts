import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SnapshotError } from '../../errors.js';
import { nodeEntry } from '../../runtime/node-entry.js';
import { runTool } from '../../util/exec.js';
import { fillRam } from '../snapshots/delta.js';

const FILL_TIMEOUT_MS = 120_000;
const MEMORY_FILES = ['memory.max', 'memory.limit_in_bytes'];

/**
 * Fills a VMM's RAM file (see fillRam) so that the guest RAM counts against the VMM's cgroups.
 * The kernel charges a shared-memory page to the group of the process that first writes it, and
 * never moves the charge after; QEMU cannot do the copy (it maps the file and reads none of it
 * before the incoming migration), and moving vmkit itself into the VMM's group for the copy
 * would charge vmkit's own memory there, risk the VMM's OOM killer choosing vmkit, and break when
 * one process starts two VMMs at once. So with a memory group, the copy is made by a short-lived
 * child that joins it first; without, by this process. The child's start (a node process: 0.1 to
 * 0.25 s on a loaded 2-core host) mostly overlaps QEMU's own.
 */
export async function fillRamCharged(
  groups: string[],
  basePath: string,
  outPath: string,
  deltaPath?: string,
): Promise<void> {
  // Only a memory group decides where the pages are charged; without one a child is no use.
  const memory = groups.filter((group) => MEMORY_FILES.some((file) => existsSync(join(group, file))));
  if (memory.length === 0) return fillRam(basePath, outPath, deltaPath);
  const { program, args } = nodeEntry(import.meta.url, './ram-fill-host', [
    basePath,
    outPath,
    deltaPath ?? '',
    ...memory,
  ]);
  await runTool(program, args, { timeoutMs: FILL_TIMEOUT_MS }).catch((error: Error) => {
    throw new SnapshotError(`filling the RAM file ${outPath} in the VMM's cgroups failed: ${error.message}`);
  });
}

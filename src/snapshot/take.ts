import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, SnapshotError, VmkitError } from '../errors.js';
import { configIdentity } from '../machine/config.js';
import type { MachineInternals, SnapshotOptions } from '../machine/internals.js';
import { runTool } from '../util/exec.js';
import { ensurePrivateDir } from '../util/private.js';
import { sparseDigest } from '../util/sparse.js';
import { removeSnapshotLeftovers } from './leftovers.js';
import {
  BOOT_CACHE_PREFIX,
  type FileRecord,
  SNAPSHOT_FORMAT,
  type SnapshotManifest,
  type SnapshotRecord,
  snapshotId,
  snapshotRoot,
  validateSnapshotName,
} from './manifest.js';
import { recordVerified } from './verify.js';

const SAVE_TIMEOUT_MS = 300_000;

/** The prefix of a snapshot being taken: names the run, so that leftovers of dead runs are found. */
export const takingPrefix = (runId: string) => `.taking-${runId}-`;

/**
 * Pauses the machine, saves device state, RAM and disks into the store, and lets it run on.
 * Called with the agent idle. The snapshot appears in the store whole or not at all.
 */
export async function takeSnapshot(
  source: MachineInternals,
  name: string | undefined,
  options: SnapshotOptions & { id?: string },
): Promise<SnapshotRecord> {
  const { vmm, config, runtime } = source;
  const identity = configIdentity(config, await source.backend.version(runtime));
  const label =
    name === undefined ? `${source.name}-${randomBytes(4).toString('hex')}` : validateSnapshotName(name);
  if (options.id === undefined && label.startsWith(BOOT_CACHE_PREFIX))
    throw new ConfigError(
      `snapshot names starting with "${BOOT_CACHE_PREFIX}" are the boot cache's: not ${label}`,
    );
  // An id given by the caller (the boot cache's key) is taken as it is.
  const id = options.id ?? (name === undefined ? label : snapshotId(label, identity, options.key));
  const root = snapshotRoot();
  ensurePrivateDir(root); // guest RAM and disks: its owner's alone
  await removeSnapshotLeftovers(); // of runs killed while they took one
  const scratch = await mkdtemp(join(root, takingPrefix(runtime.runId)));
  const ramInStream = !source.memory.share;
  const files: Record<string, FileRecord> = {};
  try {
    await vmm.pause();
    try {
      Object.assign(
        files,
        await vmm.saveState(scratch, {
          ramInFile: !ramInStream,
          ramPath: source.memory.path,
          timeoutMs: SAVE_TIMEOUT_MS,
        }),
      );
      for (const [index, disk] of source.disks.entries()) {
        // Flattened, so the snapshot does not depend on whatever the disk was an overlay of; an
        // image's root disk (always the first) keeps the image's base under it and holds only
        // what differs from it.
        const base = index === 0 && config.image.disk ? ['-B', config.image.disk, '-F', 'qcow2'] : [];
        await runTool(
          'qemu-img',
          ['convert', '-U', '-O', 'qcow2', ...base, disk, join(scratch, `disk${index}.qcow2`)],
          { timeoutMs: SAVE_TIMEOUT_MS },
        );
      }
    } finally {
      if (!options.stop && !vmm.hasExited) await vmm.resume();
    }
    for (const file of [
      'state',
      ...(ramInStream ? [] : ['ram']),
      ...source.disks.map((_, i) => `disk${i}.qcow2`),
    ]) {
      if (files[file]) continue;
      const { digest, bytes } = await sparseDigest(join(scratch, file));
      files[file] = { digest, bytes };
    }
    const manifest: SnapshotManifest = {
      format: SNAPSHOT_FORMAT,
      id,
      name: label,
      createdAt: new Date().toISOString(),
      source: source.name,
      identity,
      image: config.image,
      macs: config.macs,
      nics: source.nics.map(({ mac, address }) => ({ mac, ...(address ? { address } : {}) })),
      ...(config.allowReboot ? { allowReboot: true } : {}),
      ramInStream,
      files,
    };
    await writeFile(join(scratch, 'manifest.json'), JSON.stringify(manifest, null, 2));
    await recordVerified(scratch);
    const dir = join(root, id);
    // Replace an older snapshot of the same name: clones running from it keep their open files.
    const old = existsSync(dir) ? `${dir}.old-${runtime.runId}-${randomBytes(3).toString('hex')}` : undefined;
    if (old) await rename(dir, old);
    await rename(scratch, dir);
    if (old) await rm(old, { recursive: true, force: true });
    return { manifest, dir };
  } catch (error) {
    await rm(scratch, { recursive: true, force: true });
    throw error instanceof VmkitError
      ? error
      : new SnapshotError(`snapshot of ${source.name} failed: ${(error as Error).message}`);
  }
}

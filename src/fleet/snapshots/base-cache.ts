import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Accel } from '../../backends/accel.js';
import type { BootImage } from '../../images/types.js';
import { configIdentity } from '../../machine/config.js';
import type { Runtime } from '../../runtime/runtime.js';
import { guestFilesDigest, pruneBootCache, usableEntry } from '../../snapshot/boot-cache.js';
import {
  BOOT_CACHE_PREFIX,
  type FileRecord,
  hashOf,
  SNAPSHOT_FORMAT,
  type SnapshotManifest,
  snapshotRoot,
} from '../../snapshot/manifest.js';
import { takingPrefix } from '../../snapshot/take.js';
import { recordVerified } from '../../snapshot/verify.js';
import { ensurePrivateDir } from '../../util/private.js';
import { sparseDigest } from '../../util/sparse.js';
import type { Pool } from '../state/model.js';
import { fleetBackend } from '../vmm/vmms.js';

/**
 * The boot cache under pool bases. A base is one guest of the pool's shape booted from its image,
 * set up and saved; two pools of one tenant and one shape (image, memory, vCPUs, data disk,
 * outbound NIC, the base's set-up) have the same guest, whichever pool they serve: instances get
 * their own identity when they start. So the first base of a shape is also saved in the boot
 * cache's store (`boot.fleet-<image>-<key>`, listed, capped and verified with the machines'
 * entries), and later bases of that shape are copies of it instead of a boot. Never across
 * tenants: what a guest makes at its first boot (a random seed file, keys a package generates
 * then) would otherwise be known to another tenant's instances.
 */

/** What a base holds beside its record: device state, RAM, and the root disk's overlay if any. */
const filesOf = (shape: BaseShape) => ['state', 'ram', ...(shape.image.disk ? ['root.qcow2'] : [])];
/** Bumped when what a base holds changes in a way the key does not show. */
const BASE_CACHE_FORMAT = 1;

export interface BaseShape {
  pool: Pool;
  image: BootImage;
  /** The script that set the base's guest up after its boot. */
  setup: string;
  outbound: boolean;
  accel: Accel;
  /** The VMM's version (fleetBackend().version()). */
  vmmVersion: string;
  runtime: Runtime;
}

/** The entry id of a base's shape, or undefined when the boot cache is off. */
export async function baseCacheId(shape: BaseShape): Promise<string | undefined> {
  if (process.env.VMKIT_BOOT_CACHE === 'off') return undefined;
  const { pool, image } = shape;
  const key = hashOf({
    format: BASE_CACHE_FORMAT,
    snapshotFormat: SNAPSHOT_FORMAT,
    vmmVersion: shape.vmmVersion,
    accel: shape.accel,
    image: image.key,
    cmdline: image.cmdline,
    profile: image.profile,
    guestFiles: guestFilesDigest(),
    memoryMiB: pool.memoryMiB,
    vcpus: pool.vcpus,
    dataDiskMiB: pool.dataDiskMiB,
    outbound: shape.outbound,
    setup: shape.setup,
    tenant: pool.tenant,
  });
  const name = image.name
    .toLowerCase()
    .replace(/[^a-z0-9_.-]+/g, '-')
    .slice(0, 18);
  return `${BOOT_CACHE_PREFIX}fleet-${name || 'image'}-${key.slice(0, 16)}`;
}

/**
 * Copies the entry `id` into the base being made in `dir` (state, RAM, root overlay); returns the
 * RAM's digest and data bytes, or undefined when there is no usable entry (a damaged one is
 * removed, and `warn` told).
 */
export async function copyCachedBase(
  id: string,
  dir: string,
  shape: BaseShape,
  warn: (line: string) => void,
): Promise<{ digest: string; dataBytes: number } | undefined> {
  const entry = await usableEntry(
    id,
    { runtime: shape.runtime, accel: { accel: shape.accel, reason: '' } },
    warn,
  );
  if (!entry) return undefined;
  // One read per file: the copy, and its digest against the manifest's (a change while copying).
  let ram: { digest: string; dataBytes: number } | undefined;
  for (const file of filesOf(shape)) {
    const copied = await sparseDigest(join(entry.dir, file), join(dir, file));
    if (copied.digest !== entry.manifest.files[file]?.digest) {
      await rm(entry.dir, { recursive: true, force: true });
      warn(`boot cache: entry ${id} removed, booting the base: its ${file} changed while it was copied`);
      return undefined;
    }
    if (file === 'ram') ram = copied;
  }
  return ram;
}

/**
 * Saves a finished base (in `dir`) as the entry `id`, whole or not at all. A failure only costs
 * the next base of this shape its shortcut: it is a warning.
 */
export async function saveBaseToCache(
  id: string,
  dir: string,
  shape: BaseShape,
  log: (line: string) => void,
  warn: (line: string) => void,
): Promise<void> {
  const root = snapshotRoot();
  let scratch: string | undefined;
  try {
    ensurePrivateDir(root);
    scratch = await mkdtemp(join(root, takingPrefix(shape.runtime.runId)));
    const files: Record<string, FileRecord> = {};
    for (const file of filesOf(shape)) {
      const { digest, bytes } = await sparseDigest(join(dir, file), join(scratch, file));
      files[file] = { digest, bytes };
    }
    const { pool, image } = shape;
    const manifest: SnapshotManifest = {
      format: SNAPSHOT_FORMAT,
      id,
      name: id,
      createdAt: new Date().toISOString(),
      source: `fleet base of ${pool.tenant}/${pool.id}`,
      identity: configIdentity(
        {
          backend: fleetBackend().name,
          image,
          memoryMiB: pool.memoryMiB,
          cpus: pool.vcpus,
          accel: shape.accel,
          nics: 1,
          macs: [],
          disks: [
            ...(image.disk ? [{ sizeMiB: image.diskSizeMiB ?? 0, base: image.disk }] : []),
            { sizeMiB: pool.dataDiskMiB },
          ],
          qemuArgs: [],
        },
        shape.vmmVersion,
      ),
      image,
      macs: [],
      nics: [],
      ramInStream: false,
      files,
    };
    await writeFile(join(scratch, 'manifest.json'), JSON.stringify(manifest, null, 2));
    await recordVerified(scratch);
    await rename(scratch, join(root, id)).catch(async (error: NodeJS.ErrnoException) => {
      // Another process saved this shape meanwhile: theirs stays.
      if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
    });
    log(`boot cache: saved ${id}`);
    for (const gone of await pruneBootCache({ keep: id }))
      log(`boot cache: removed ${gone.id}: ${gone.reason}`);
  } catch (error) {
    warn(`boot cache: could not save ${id}, the next base of this shape boots: ${(error as Error).message}`);
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}

import { createHash } from 'node:crypto';
import {
  closeSync,
  constants,
  createReadStream,
  existsSync,
  fstatSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { SnapshotError } from '../../errors.js';
import { ensureDirSync } from '../../util/files.js';
import { checkStandaloneQcow2, flattenQcow2, qcow2BackingFile } from '../../util/qcow2.js';
import type { Instance, Pool, Tenant } from '../state/model.js';
import { ensureRecordsDir } from '../vmm/records.js';
import {
  dataDiskPath,
  guestImage,
  hasSleepState,
  instanceDir,
  rootDiskPath,
  sleepRecordsDir,
  sleepStatePath,
  type VmContext,
} from '../vmm/vm.js';
import { ensureBase } from './base.js';
import { buildRam, type DeltaInfo, deltaInfo, writeDelta } from './delta.js';
import { instanceBase, sleepDeltaPath, writeSleepMarker } from './sleep.js';

/**
 * A sleep state that travels to another node (a cluster move). Each node has bases of its own,
 * so the RAM travels whole: as a delta against zeros (delta.ts: only the pages in use), from which
 * the arriving node writes its own delta against its own base. The device state and the data
 * disk travel as they are; a disk image's root disk travels flattened (packRootDisk).
 */

/** The files of a travelling sleep state: the root disk only for a disk image's pool. */
export const TRAVEL_FILES = ['state', 'ram', 'data.qcow2', 'root.qcow2'] as const;
export type TravelFileName = (typeof TRAVEL_FILES)[number];

export interface TravelFile {
  name: TravelFileName;
  bytes: number;
  sha256: string;
}

/** A sha256 of a file, streamed. */
export async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Copies a file of the VMM's folder (the tenant's uid may have put a link there): only a plain
 * file, never through a link.
 */
function copyPlainFile(from: string, to: string, what: string): void {
  let fd: number;
  try {
    fd = openSync(from, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    throw new SnapshotError(`${what} ${from} cannot be read: ${(error as Error).message}`);
  }
  const out = openSync(to, 'wx', 0o600);
  try {
    if (!fstatSync(fd).isFile()) throw new SnapshotError(`${what} ${from} is not a plain file`);
    const buffer = Buffer.alloc(1 << 20);
    for (let read = readSync(fd, buffer); read > 0; read = readSync(fd, buffer))
      writeSync(out, buffer, 0, read);
  } finally {
    closeSync(fd);
    closeSync(out);
  }
}

/** A file of `bytes` zeros (holes): what a RAM file travels as a delta against. */
function zeros(path: string, bytes: number): string {
  writeFileSync(path, '', { mode: 0o600 });
  truncateSync(path, bytes);
  return path;
}

/**
 * Packs a Sleeping instance's state into `outDir` (made afresh): the device state, the whole RAM
 * and the data disk, with their digests. Refused for a pool whose image has a root disk.
 */
export async function packSleepState(
  ctx: VmContext,
  instance: Instance,
  pool: Pool,
  outDir: string,
): Promise<TravelFile[]> {
  const dir = instanceDir(ctx.fleetDir, instance.seq);
  if (instance.state !== 'Sleeping' || !hasSleepState(dir))
    throw new SnapshotError(`instance ${instance.path} has no whole sleep state to move`);
  const image = await guestImage(ctx, instance.revision, pool, `instance ${instance.path}`);
  rmSync(outDir, { recursive: true, force: true });
  ensureDirSync(outDir, 0o700);
  copyPlainFile(sleepStatePath(dir), join(outDir, 'state'), 'the device state');
  copyPlainFile(dataDiskPath(dir), join(outDir, 'data.qcow2'), 'the data disk');
  const base = instanceBase(ctx.fleetDir, instance, pool);
  if (image.disk) await packRootDisk(dir, rootDiskPath(base.dir), outDir);
  const whole = join(outDir, 'ram.whole');
  await buildRam(base.ram, whole, sleepDeltaPath(dir));
  await writeDelta(whole, zeros(join(outDir, 'zeros'), statSync(whole).size), join(outDir, 'ram'));
  rmSync(whole, { force: true });
  rmSync(join(outDir, 'zeros'), { force: true });
  const files: TravelFile[] = [];
  for (const name of TRAVEL_FILES) {
    const path = join(outDir, name);
    if (name === 'root.qcow2' && !image.disk) continue;
    files.push({ name, bytes: statSync(path).size, sha256: await sha256Of(path) });
  }
  return files;
}

/**
 * A disk image's root disk travels whole: the instance's overlay (on this node's base, on the
 * image) flattened into one disk that needs neither. The overlay is copied out of the VMM's folder
 * first and must name this node's base as its backing file: nothing else of the host is read.
 */
async function packRootDisk(dir: string, baseDisk: string, outDir: string): Promise<void> {
  const overlay = join(outDir, 'root.overlay');
  copyPlainFile(rootDiskPath(dir), overlay, 'the root disk');
  const backing = qcow2BackingFile(overlay);
  if (backing !== baseDisk)
    throw new SnapshotError(
      `the root disk ${rootDiskPath(dir)} names ${backing ?? 'no'} backing file, not its base's ${baseDisk}`,
    );
  await flattenQcow2(overlay, join(outDir, 'root.qcow2'));
  rmSync(overlay, { force: true });
}

/**
 * Makes the sleep state that `inDir` holds (packSleepState's files, their digests checked) the
 * sleep state of `instance`, a new one here in Ready: its RAM as a delta of this node's base for
 * the pool, the address it had (`fromAddress`) kept in the marker, so that its wake renumbers it.
 */
export async function adoptSleepState(
  ctx: VmContext,
  instance: Instance,
  pool: Pool,
  tenant: Tenant,
  inDir: string,
  fromAddress: string,
): Promise<DeltaInfo> {
  const dir = instanceDir(ctx.fleetDir, instance.seq);
  checkStandaloneQcow2(join(inDir, 'data.qcow2'), 'the data disk that arrived');
  const image = await guestImage(ctx, instance.revision, pool, `instance ${instance.path}`);
  const root = join(inDir, 'root.qcow2');
  if (Boolean(image.disk) !== existsSync(root))
    throw new SnapshotError(
      `instance ${instance.path}: ${image.disk ? 'no root disk arrived, and its image has one' : 'a root disk arrived, and its image has none'}`,
    );
  if (image.disk) checkStandaloneQcow2(root, 'the root disk that arrived');
  const base = await ensureBase(ctx, pool, tenant);
  const ramBytes = statSync(base.ram).size;
  const arrived = deltaInfo(join(inDir, 'ram'));
  if (arrived.ramBytes !== ramBytes)
    throw new SnapshotError(
      `instance ${instance.path}: the RAM that arrived is ${arrived.ramBytes} bytes, pool ${pool.tenant}/${pool.id}'s base here ${ramBytes}`,
    );
  const records = join(ensureRecordsDir(dir), 'sleep');
  ensureDirSync(records, 0o700);
  const whole = join(records, 'ram.whole');
  const blank = zeros(join(inDir, 'zeros'), ramBytes);
  try {
    await buildRam(blank, whole, join(inDir, 'ram'));
    const delta = await writeDelta(whole, base.ram, sleepDeltaPath(dir));
    // Into the VMM's folder by rename, never written through a name in it (none ran there yet).
    ensureDirSync(join(dir, 'sleep'), 0o700);
    renameSync(join(inDir, 'state'), sleepStatePath(dir));
    renameSync(join(inDir, 'data.qcow2'), dataDiskPath(dir));
    if (image.disk) renameSync(root, rootDiskPath(dir));
    writeSleepMarker(dir, { id: base.id, revision: base.revision, address: fromAddress });
    return delta;
  } finally {
    rmSync(whole, { force: true });
    rmSync(blank, { force: true });
    rmSync(`${blank}.runs`, { force: true });
  }
}

/**
 * Which sleep an instance's sleep state is (its marker's time and size): a copy made of another
 * sleep is out of date. Undefined without a whole sleep state.
 */
export function sleepStateId(fleetDir: string, instance: Instance): string | undefined {
  const dir = instanceDir(fleetDir, instance.seq);
  if (!hasSleepState(dir)) return undefined;
  const marker = statSync(join(sleepRecordsDir(dir), 'base.json'), { throwIfNoEntry: false });
  return marker && `${Math.round(marker.mtimeMs)}-${marker.size}`;
}

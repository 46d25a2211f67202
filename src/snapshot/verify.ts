import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type AccelRequest, chooseAccel } from '../backends/accel.js';
import { backendNamed } from '../backends/index.js';
import type { Runtime } from '../runtime/runtime.js';
import { sparseDigest } from '../util/sparse.js';
import { SNAPSHOT_FORMAT, type SnapshotRecord } from './manifest.js';

/**
 * Why this host cannot restore a snapshot faithfully: every reason, or none. Checks the format,
 * the backend and its version, the accelerator `auto` (or `accel`) would pick, the image, and
 * that every file still matches its digest (cheap when the files are unchanged since they were
 * last verified: see verifyFiles).
 */
export async function restorability(
  record: SnapshotRecord,
  runtime: Runtime,
  accel: AccelRequest = 'auto',
): Promise<string[]> {
  const { manifest } = record;
  if (manifest.format !== SNAPSHOT_FORMAT)
    return [`made by another vmkit version (format ${manifest.format})`];
  const reasons: string[] = [];
  const { identity } = manifest;
  if (identity.hostNic?.internet && !identity.hostNic.outboundMac) {
    // Its guest had outbound access through QEMU's slirp on the host NIC: no NIC out to restore.
    reasons.push('taken with outbound access on the host NIC, before outbound had a NIC of its own');
  }
  try {
    const backend = backendNamed(identity.backend);
    const here = await backend.version(runtime).catch(() => `${backend.title} not installed`);
    if (identity.vmmVersion !== here)
      reasons.push(`taken with "${identity.vmmVersion}" but this is "${here}"`);
    const chosen = await chooseAccel(accel, runtime).catch((error: Error) => ({
      accel: undefined,
      reason: error.message,
    }));
    if (chosen.accel !== identity.accel) {
      reasons.push(
        `taken under ${identity.accel}; this host would use ${chosen.accel ?? 'none'} (${chosen.reason})`,
      );
    }
  } catch (error) {
    reasons.push((error as Error).message);
  }
  const { kernel, initrd, disk } = manifest.image;
  for (const file of [kernel, initrd, ...(disk ? [disk] : [])]) {
    if (!existsSync(file)) reasons.push(`its image is gone (${file})`);
  }
  for (const disk of identity.extraDisks ?? []) {
    if (!existsSync(disk.path)) reasons.push(`its extra disk ${disk.serial} is gone (${disk.path})`);
  }
  const damage = await verifyFiles(record);
  if (damage) reasons.push(damage);
  return reasons;
}

const VERIFIED = 'verified.json';

/** What changes when a file's bytes are changed in place: size, times, inode. */
async function fingerprint(path: string): Promise<string | undefined> {
  const s = await stat(path, { bigint: true }).catch(() => undefined);
  return s && `${s.size}:${s.mtimeNs}:${s.ctimeNs}:${s.ino}`;
}

/**
 * Checks every file of a snapshot against its recorded size and digest; returns what is wrong, or
 * undefined. A file whose size, times and inode are those recorded at its last verification is
 * not read again (a write to it changes its ctime, which no program can set back); any other is
 * re-hashed, and the fingerprints are recorded again when all match.
 */
export async function verifyFiles(record: SnapshotRecord): Promise<string | undefined> {
  const { manifest, dir } = record;
  const known = await readFile(join(dir, VERIFIED), 'utf8')
    .then((text) => JSON.parse(text) as Record<string, string>)
    .catch(() => ({}) as Record<string, string>);
  const now: Record<string, string> = {};
  let hashed = false;
  for (const [file, expected] of Object.entries(manifest.files)) {
    const path = join(dir, file);
    const print = await fingerprint(path);
    if (!print) return `damaged: ${file} has gone missing`;
    const size = Number(print.split(':')[0]);
    if (size !== expected.bytes) return `damaged: ${file} has ${size} bytes, not ${expected.bytes}`;
    now[file] = print;
    if (known[file] === print) continue;
    hashed = true;
    const { digest } = await sparseDigest(path);
    if (digest !== expected.digest) return `tampered with: ${file} does not match its checksum`;
  }
  if (hashed) await recordVerified(dir, now);
  return undefined;
}

/** Records the files' fingerprints as verified (after taking a snapshot, or a full check). */
export async function recordVerified(dir: string, prints?: Record<string, string>): Promise<void> {
  let record = prints;
  if (!record) {
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as {
      files: Record<string, unknown>;
    };
    record = {};
    for (const file of Object.keys(manifest.files)) {
      const print = await fingerprint(join(dir, file));
      if (print) record[file] = print;
    }
  }
  // Best effort: a read-only store is verified afresh each time.
  await writeFile(join(dir, VERIFIED), JSON.stringify(record)).catch(() => {});
}

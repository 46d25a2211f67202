// What a snapshot costs: machine.snapshot() of a booted, idle machine, timed (the snapshot every
// restore, pool and fork of this benchmark starts from), the size of its files, and its RAM pass,
// sparseDigest(), on its own.

import { statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Snapshot } from 'vmkit';
// Not part of vmkit's API: the one-pass sparse copy + digest machine.snapshot() runs on guest RAM.
import { sparseDigest } from '../../src/util/sparse.js';
import { closeMachine, log, round } from '../lib.js';
import { boot, firstCommand, track } from './common.js';

/**
 * Boots the template machine and takes its snapshot, timed. The snapshot is tracked: deleted at the
 * end of the run if it is still there.
 */
export async function templateSnapshot() {
  log('booting the template machine and taking its snapshot');
  const template = await boot('bench-tpl');
  let snapshot: Snapshot;
  let snapshotMs: number;
  try {
    await firstCommand(template);
    const t = performance.now();
    snapshot = track(await template.snapshot());
    snapshotMs = round(performance.now() - t);
  } finally {
    await closeMachine(template);
  }
  const snapshotFiles = Object.fromEntries(
    Object.entries(snapshot.manifest.files).map(([file, record]) => {
      // The RAM file is sparse: pages the guest never touched take no room on disk.
      const allocated = statSync(join(snapshot.dir, file)).blocks * 512;
      return [file, { bytes: record.bytes, allocatedBytes: allocated }];
    }),
  );
  log(`snapshot ${snapshot.id}: ${snapshotMs} ms; files ${JSON.stringify(snapshotFiles)}`);
  return { snapshot, snapshotMs, snapshotFiles };
}

/**
 * The RAM pass of machine.snapshot() on its own, redone on the finished snapshot's RAM file:
 * sparseDigest() copying the non-zero blocks to a new sparse file in the snapshot store while
 * digesting them (vmkit reads the running machine's RAM file in /dev/shm; this reads the
 * snapshot's copy, just written and so in the page cache). Then the digest alone, which is what
 * the first restore of a snapshot in a process costs to verify its RAM file.
 */
export async function snapshotCostEstimates(snapshot: Snapshot) {
  const ram = join(snapshot.dir, 'ram');
  const copy = join(snapshot.dir, `ram.bench-copy-${process.pid}`);
  let t = performance.now();
  let copied: Awaited<ReturnType<typeof sparseDigest>>;
  try {
    copied = await sparseDigest(ram, copy);
  } finally {
    await rm(copy, { force: true });
  }
  const copyMs = round(performance.now() - t);
  t = performance.now();
  const digested = await sparseDigest(ram);
  const digestMs = round(performance.now() - t);
  const recorded = snapshot.manifest.files.ram?.digest;
  return {
    ramBytes: copied.bytes,
    /** Bytes in non-zero 4 KiB blocks: what the pass copies and digests. */
    ramDataBytes: copied.dataBytes,
    ramSparseCopyAndDigestMs: copyMs,
    ramDigestMs: digestMs,
    /** Both passes gave the digest recorded in the manifest. */
    digestMatchesManifest: copied.digest === recorded && digested.digest === recorded,
  };
}

import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Runtime } from '../../runtime/runtime.js';
import { snapshotRoot } from '../../snapshot/manifest.js';
import {
  listSnapshots,
  openSnapshot,
  pruneSnapshots,
  removeSnapshot,
  snapshotProblems,
} from '../../snapshot/store.js';

const megabytes = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

export async function listSnapshotsCommand(): Promise<void> {
  const snapshots = await listSnapshots();
  await using runtime = new Runtime();
  if (snapshots.length === 0) {
    process.stdout.write(`no snapshots in ${snapshotRoot()}\n`);
    return;
  }
  for (const snapshot of snapshots) {
    const { manifest, dir } = snapshot;
    // What the files really take on disk: guest RAM is stored sparse.
    let bytes = 0;
    for (const file of Object.keys(manifest.files)) {
      bytes += await stat(join(dir, file)).then(
        (s) => s.blocks * 512,
        () => 0,
      );
    }
    const problem = (await snapshotProblems(snapshot, runtime)).join('; ');
    const { memoryMiB, cpus, accel, disks } = manifest.identity;
    process.stdout.write(
      `${manifest.id}\t${manifest.createdAt}\tfrom ${manifest.source}, ${memoryMiB} MiB, ${cpus} cpu, ${accel}, ${disks.length} disk(s), ${megabytes(bytes)}${problem ? `\tNOT RESTORABLE: ${problem}` : ''}\n`,
    );
  }
}

export async function removeSnapshotsCommand(ids: string[]): Promise<void> {
  for (const id of ids) {
    const snapshot = await openSnapshot(id);
    await removeSnapshot(snapshot);
    process.stdout.write(`removed ${snapshot.id}\n`);
  }
}

export async function pruneSnapshotsCommand(options: { all?: boolean }): Promise<void> {
  await using runtime = new Runtime();
  const removed = await pruneSnapshots({ ...options, runtime });
  for (const { id, reason } of removed) process.stdout.write(`removed ${id}: ${reason}\n`);
  if (removed.length === 0) process.stdout.write('nothing to prune\n');
}

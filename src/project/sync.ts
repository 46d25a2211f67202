import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, TransferError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { guestFilesDir } from '../util/paths.js';
import { shellQuote } from '../util/shell.js';
import type { SyncMap } from './config.js';
import type { HubClient } from './hub-client.js';
import { hostManifest, type Manifest, planSync } from './manifest.js';
import { readJson, writeFileAtomic } from './state.js';

export interface SyncReport {
  guest: string;
  sent: number;
  deleted: number;
  unchanged: number;
  bytes: number;
  /** Up to 20 of the paths that moved, for the report. */
  sample: string[];
}

/** Where the manifest of what the guest holds for one sync map is kept. */
export const syncedManifestPath = (vmDir: string, map: SyncMap) =>
  join(
    vmDir,
    `synced-${createHash('sha256').update(`${map.host}\0${map.guest}`).digest('hex').slice(0, 12)}.json`,
  );

const applyScript = () => readFileSync(join(guestFilesDir(), 'project', 'sync-apply.sh'), 'utf8');

/**
 * Brings the guest folder of `map` in line with the host folder: only entries whose size,
 * mtime, mode or link target changed since the last sync travel (in one tar through the
 * backdoor's transfer port), deleted ones are deleted. The manifest of what the guest holds is
 * written only after the guest applied the change, so an interrupted sync is redone whole.
 */
export async function syncMap(
  hub: HubClient,
  vmDir: string,
  scratchDir: string,
  map: SyncMap,
  options: { full?: boolean } = {},
): Promise<SyncReport> {
  const manifestFile = syncedManifestPath(vmDir, map);
  const previous: Manifest = options.full ? {} : (readJson<Manifest>(manifestFile) ?? {});
  const current = await hostManifest(map.host, map.exclude, map.gitignore);
  const plan = planSync(previous, current);
  const report = {
    guest: map.guest,
    sent: plan.send.length,
    deleted: plan.deleted.length,
    unchanged: plan.unchanged,
    bytes: plan.bytes,
    sample: [...plan.send.slice(0, 15), ...plan.deleted.slice(0, 5).map((path) => `-${path}`)],
  };
  if (plan.send.length === 0 && plan.remove.length === 0) return report;
  const odd = [...plan.send, ...plan.remove].find((path) => path.includes('\n'));
  if (odd !== undefined)
    throw new ConfigError(`sync: a path with a newline cannot be synced: ${JSON.stringify(odd)}`);

  const tag = randomBytes(4).toString('hex');
  const tarball = join(scratchDir, `sync-${tag}.tar`);
  const list = join(scratchDir, `sync-${tag}.list`);
  const removals = join(scratchDir, `sync-${tag}.remove`);
  const guestTar = `/tmp/vmkit-sync-${tag}.tar`;
  const guestRemovals = `/tmp/vmkit-sync-${tag}.remove`;
  try {
    await writeFile(removals, plan.remove.map((path) => `${path}\n`).join(''));
    await upload(hub, removals, guestRemovals);
    if (plan.send.length > 0) {
      await writeFile(list, plan.send.map((path) => `${path}\0`).join(''));
      // Owned by root in the guest; folders are listed on their own, so no recursion.
      await runTool('tar', [
        '-c',
        '-f',
        tarball,
        '--owner=0',
        '--group=0',
        '--numeric-owner',
        '--no-recursion',
        '-C',
        map.host,
        '--null',
        '-T',
        list,
      ]);
      await upload(hub, tarball, guestTar);
    }
    const args = [guestTar, guestRemovals, map.guest].map(shellQuote).join(' ');
    const result = await hub.run(`set -- ${args}\n${applyScript()}`, 300_000);
    if (result.status !== 0) {
      throw new TransferError(
        `sync into ${map.guest} failed in the guest (status ${result.status}): ${result.stderr.toString().trim()}`,
      );
    }
  } finally {
    await Promise.all([tarball, list, removals].map((file) => rm(file, { force: true })));
  }
  writeFileAtomic(manifestFile, JSON.stringify(current));
  return report;
}

async function upload(hub: HubClient, hostPath: string, guestPath: string): Promise<void> {
  const result = await hub.request({ type: 'upload', hostPath, guestPath, timeoutMs: 300_000 });
  if (result.status !== 0) {
    throw new TransferError(`copying ${hostPath} to ${guestPath} failed: ${result.stderr.toString().trim()}`);
  }
}

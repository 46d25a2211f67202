import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, TransferError } from '../errors.js';
import { runTool } from '../util/exec.js';
import type { SyncMap } from './config.js';
import { hostManifest, type Manifest } from './manifest.js';
import { writeFileAtomic } from './state.js';
import { type SyncReport, syncedManifestPath } from './sync.js';

/**
 * The paths of `root` to leave out so that rsync sends exactly `manifest` (the same excludes,
 * .gitignore and always-excluded folders as vmkit's own sync): every entry not in the manifest,
 * topmost only (a folder not in it holds nothing that is, as the manifest lists every parent).
 */
export function excludedPaths(root: string, manifest: Manifest): string[] {
  const out: string[] = [];
  const visit = (dir: string, prefix: string) => {
    for (const item of readdirSync(dir, { withFileTypes: true })) {
      const path = prefix + item.name;
      const entry = manifest[path];
      if (!entry) out.push(path);
      else if (entry.type === 'dir' && item.isDirectory()) visit(join(dir, item.name), `${path}/`);
    }
  };
  visit(root, '');
  return out;
}

/** An rsync exclude pattern for exactly one path, anchored at the transfer's root. */
export function excludePattern(path: string): string {
  // rsync reads a backslash as an escape only in a pattern that has a wildcard character.
  const literal = /[*?[]/.test(path) ? path.replace(/[*?[\\]/g, '\\$&') : path;
  return `/${literal}`;
}

/**
 * What moved, from rsync's `--itemize-changes` lines and `--stats`: a sent entry is a file
 * transferred, an entry created (folder, symlink) or a non-folder whose attributes changed;
 * folders whose time alone changed are not counted.
 */
export function parseRsyncOutput(guest: string, output: string): SyncReport {
  const sent: string[] = [];
  const deleted: string[] = [];
  for (const line of output.split('\n')) {
    const deletion = /^\*deleting +(.*)$/.exec(line);
    if (deletion) {
      deleted.push((deletion[1] as string).replace(/\/$/, ''));
      continue;
    }
    const item = /^([<>ch.])([fdLDS])([^ ]{9}) (.*)$/.exec(line);
    if (!item) continue;
    const [, change, type, attributes, name] = item as unknown as [string, string, string, string, string];
    if (change === '.' && (type === 'd' || !/[^.]/.test(attributes))) continue;
    sent.push(name.replace(/ -> .*$/, '').replace(/\/$/, ''));
  }
  const number = (label: string) =>
    Number((new RegExp(`^${label}: ([\\d,]+)`, 'm').exec(output)?.[1] ?? '0').replace(/,/g, ''));
  const files = number('Number of files');
  return {
    guest,
    sent: sent.length,
    deleted: deleted.length,
    // rsync counts the root folder, which vmkit's own manifest does not hold.
    unchanged: Math.max(0, files - 1 - sent.length),
    bytes: number('Total transferred file size'),
    sample: [...sent.slice(0, 15), ...deleted.slice(0, 5).map((path) => `-${path}`)],
  };
}

/** Writes rsync's exclude file for sending exactly `manifest` of `root`. */
export async function writeExcludeFile(file: string, root: string, manifest: Manifest): Promise<void> {
  await writeFile(
    file,
    excludedPaths(root, manifest)
      .map((path) => `${excludePattern(path)}\n`)
      .join(''),
  );
}

/**
 * rsync's arguments for a mirror of `source` into `destination` leaving out what the exclude
 * file names: recursive, symlinks as symlinks, modes and times kept, files owned by the receiver
 * (root in the guest), deletions, and what moved itemized for the report. `shell`: rsync's -e.
 */
export function rsyncArgs(
  excludeFile: string,
  source: string,
  destination: string,
  shell?: string,
): string[] {
  return [
    '--recursive',
    '--links',
    '--perms',
    '--times',
    '--no-owner',
    '--no-group',
    '--delete',
    '--itemize-changes',
    '--stats',
    `--exclude-from=${excludeFile}`,
    ...(shell ? ['-e', shell] : []),
    source,
    destination,
  ];
}

/**
 * Mirrors the host folder of `map` into the guest with rsync over the VM's SSH: changed files by
 * rsync's own size and mtime check against what the guest really holds; files that are gone from
 * the host (and are not excluded) are deleted in the guest; modes, times and symlinks kept, owned
 * by root. Afterwards the manifest of vmkit's own sync is brought up to date, so that the two
 * methods can take turns.
 */
export async function rsyncMap(
  sshConfig: string,
  sshHost: string,
  vmDir: string,
  scratchDir: string,
  map: SyncMap,
): Promise<SyncReport> {
  const manifest = await hostManifest(map.host, map.exclude, map.gitignore);
  const odd = Object.keys(manifest).find((path) => path.includes('\n'));
  if (odd !== undefined)
    throw new ConfigError(`sync: a path with a newline cannot be synced: ${JSON.stringify(odd)}`);
  const filters = join(scratchDir, `rsync-${randomBytes(4).toString('hex')}.filter`);
  try {
    await writeExcludeFile(filters, map.host, manifest);
    const args = rsyncArgs(filters, `${map.host}/`, `${sshHost}:${map.guest}/`, `ssh -F "${sshConfig}"`);
    const { stdout } = await runTool('rsync', args, { timeoutMs: 600_000 }).catch((error: Error) => {
      throw new TransferError(`rsync into ${map.guest} failed: ${error.message}`);
    });
    writeFileAtomic(syncedManifestPath(vmDir, map), JSON.stringify(manifest));
    return parseRsyncOutput(map.guest, stdout);
  } finally {
    await rm(filters, { force: true });
  }
}

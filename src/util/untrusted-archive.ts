import { constants } from 'node:fs';
import { open, readlink, realpath } from 'node:fs/promises';
import { posix } from 'node:path';
import { x as extract, type ReadEntry } from 'tar';

/** An archive entry that was not written, and why. */
export interface LeftOut {
  /** Its name in the archive, without a leading `./`. */
  path: string;
  reason: string;
}

export interface UnpackResult {
  /** Entries refused by the rules: device nodes, FIFOs, names or links that leave the folder. */
  skipped: LeftOut[];
  /** Entries the rules allowed that could not be written (file system errors, damaged entries). */
  failed: LeftOut[];
}

export interface UnpackOptions {
  /**
   * Keep the archive's numeric owners and its setuid, setgid and sticky bits. Giving files to
   * other users takes root; without it the owner changes fail and are reported in `failed`.
   */
  keepOwnership?: boolean;
}

/** Regular files, folders and links: all that is ever created. */
const CREATED = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink', 'Link']);

const KINDS: Record<string, string> = {
  CharacterDevice: 'a character device',
  BlockDevice: 'a block device',
  FIFO: 'a FIFO',
};

/**
 * Unpacks a tar archive made by someone not trusted (a guest) into `folder`, which must exist.
 * Whoever runs this owns what is written, unless `keepOwnership`; permission bits are kept but
 * setuid, setgid and sticky bits never are, unless `keepOwnership`. Only regular files, folders,
 * symbolic links and hard links are created, and nothing outside `folder`: no absolute names, no
 * `..`, nothing through a symbolic link, no symbolic link whose target leaves the folder (absolute,
 * or climbing out with `..`), no hard link to a name outside it. node-tar's own checks stand
 * behind these, and add one: no link whose target goes through a symbolic link already there.
 * Entries refused are listed in `skipped`, entries that failed in `failed`; a damaged archive
 * rejects.
 */
export async function unpackUntrusted(
  archive: string,
  folder: string,
  options: UnpackOptions = {},
): Promise<UnpackResult> {
  const root = await realpath(folder);
  const keep = options.keepOwnership === true;
  const result: UnpackResult = { skipped: [], failed: [] };
  // With keepOwnership: the last entry accepted for each name, to set special bits on afterwards.
  const latest = new Map<string, Written>();
  const written = new WeakMap<object, Written>();
  await extract({
    file: archive,
    cwd: root,
    preserveOwner: keep,
    filter: (_path, entry) => {
      const read = entry as ReadEntry;
      const reason = refusal(read);
      if (reason) {
        result.skipped.push({ path: shown(read.path), reason });
        return false;
      }
      if (typeof read.mode === 'number' && !keep) read.mode &= 0o777;
      if (keep) {
        const record = { type: read.type, mode: (read.mode ?? 0) & 0o7777, uid: read.uid, refused: false };
        latest.set(posix.normalize(read.path).replace(/\/$/, ''), record);
        written.set(read, record);
      }
      return true;
    },
    onwarn: (code, message, data) => {
      if (code === 'TAR_ENTRY_INFO') return;
      const entry = data.entry as ReadEntry | undefined;
      const record = entry && written.get(entry);
      if (record) record.refused = true;
      const path = shown(entry?.path ?? String(data.path ?? '?'));
      if (data.code === 'TAR_SYMLINK_ERROR') {
        const link = posix.relative(root, String(data.symlink));
        result.skipped.push({ path, reason: `a path through the symbolic link ${link}` });
      } else if (refusedByTar(code, message)) result.skipped.push({ path, reason: message });
      else result.failed.push({ path, reason: message });
    },
  });
  // Giving a file to another owner clears its setuid and setgid bits, and mkdir ignores setgid:
  // set them last, on what the archive's last entry of that name wrote, and only that.
  for (const [path, record] of latest) {
    if ((record.mode & 0o7000) !== 0 && !record.refused) await restoreMode(root, path, record);
  }
  return result;
}

interface Written {
  type: string;
  mode: number;
  uid: number | undefined;
  /** tar warned about it: not (or not wholly) written. */
  refused: boolean;
}

/** Why an entry may not be written, if it may not. */
function refusal(entry: ReadEntry): string | undefined {
  if (!CREATED.has(entry.type)) return `${KINDS[entry.type] ?? `a ${entry.type} entry`}: not created`;
  const name = entry.path;
  if (name.startsWith('/')) return 'an absolute name';
  if (name.split('/').includes('..')) return 'a name with ..';
  const normal = posix.normalize(name);
  if ((normal === '.' || normal === './') && entry.type !== 'Directory')
    return 'the folder itself, as a link or file';
  const target = entry.linkpath ?? '';
  if (entry.type === 'Link') {
    if (target.startsWith('/') || target.split('/').includes('..'))
      return `a hard link to ${target}, outside the folder`;
  }
  if (entry.type === 'SymbolicLink') return symlinkRefusal(normal, target);
  return undefined;
}

/**
 * A symbolic link may go up only with leading `..` and only as far as the folder: a `..` after a
 * name could climb out through another link (`a -> .`, then `b -> a/..`), so it is refused too.
 */
function symlinkRefusal(name: string, target: string): string | undefined {
  if (target === '') return 'a symbolic link with an empty target';
  if (target.startsWith('/')) return `a symbolic link to ${target}, outside the folder`;
  const parts = target.split('/').filter((part) => part !== '' && part !== '.');
  const ups = parts.findIndex((part) => part !== '..');
  const climbs = ups === -1 ? parts.length : ups;
  if (parts.slice(climbs).includes('..')) return `a symbolic link to ${target}: .. after a name`;
  const parent = posix.dirname(name.replace(/\/+$/, ''));
  const depth = parent === '.' ? 0 : parent.split('/').filter((part) => part !== '' && part !== '.').length;
  if (climbs > depth) return `a symbolic link to ${target}, outside the folder`;
  return undefined;
}

/** node-tar's own refusals (its checks stand behind ours): not failures, entries left out. */
function refusedByTar(code: string, message: string): boolean {
  if (code === 'TAR_ENTRY_UNSUPPORTED') return true;
  return code === 'TAR_ENTRY_ERROR' && /'\.\.'|escape|excessively deep/.test(message);
}

/**
 * Sets an entry's mode again on `path` under `root` if what is there is what the entry wrote: the
 * same kind, the entry's owner, really under `root` (no link on the way).
 */
async function restoreMode(root: string, path: string, record: Written): Promise<void> {
  const flags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
  const handle = await open(posix.join(root, path), flags).catch(() => undefined);
  if (!handle) return;
  try {
    const where = await readlink(`/proc/self/fd/${handle.fd}`);
    const info = await handle.stat();
    const kind = record.type === 'Directory' ? info.isDirectory() : info.isFile();
    const inside = where === root || where.startsWith(`${root}/`);
    if (kind && inside && (record.uid === undefined || info.uid === record.uid))
      await handle.chmod(record.mode);
  } finally {
    await handle.close();
  }
}

const shown = (path: string) => path.replace(/^(\.\/)+/, '') || '.';

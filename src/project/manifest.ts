import { execFile } from 'node:child_process';
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { promisify } from 'node:util';

/**
 * What a synced tree holds, path by path: enough to tell a changed entry from an unchanged one
 * without reading file contents (size, mtime, mode, symlink target).
 */
export interface Entry {
  type: 'file' | 'dir' | 'link';
  size: number;
  mtimeMs: number;
  mode: number;
  target?: string;
}
export type Manifest = Record<string, Entry>;

/** Always left out: version control and vmkit's own state. */
const ALWAYS_EXCLUDED = ['.git', '.vmkit'];

/** A glob as gitignore writes one: `*` and `?` within a name, `**` across folders; no `/`: any name. */
export function globMatcher(patterns: string[]): (path: string) => boolean {
  const regexps = [...ALWAYS_EXCLUDED, ...patterns].map((pattern) => {
    const anchored = pattern.replace(/\/$/, '').includes('/');
    const body = pattern
      .replace(/^\//, '')
      .replace(/\/$/, '')
      .split(/(\*\*\/?|\*|\?)/)
      .map((part) => {
        if (part === '**/') return '(?:.*/)?';
        if (part === '**') return '.*';
        if (part === '*') return '[^/]*';
        if (part === '?') return '[^/]';
        return part.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      })
      .join('');
    return new RegExp(anchored ? `^${body}$` : `(?:^|/)${body}$`);
  });
  // A path is out when it, or a folder above it, matches.
  return (path) => {
    const parts = path.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      if (regexps.some((regexp) => regexp.test(prefix))) return true;
    }
    return false;
  };
}

// Synchronous on purpose: thousands of lstat calls are several times faster without a trip
// through libuv's thread pool each, and the no-change sync is all lstat.
function entryOf(full: string): Entry | undefined {
  const stats = lstatSync(full, { throwIfNoEntry: false });
  if (!stats) return undefined;
  const base = { mtimeMs: Math.floor(stats.mtimeMs), mode: stats.mode & 0o7777 };
  if (stats.isSymbolicLink()) return { ...base, type: 'link', size: 0, target: readlinkSync(full) };
  if (stats.isDirectory()) return { ...base, type: 'dir', size: 0, mtimeMs: 0 };
  if (stats.isFile()) return { ...base, type: 'file', size: stats.size };
  return undefined; // sockets, fifos, devices are not synced
}

/** Files git does not ignore (tracked and untracked), or undefined when `root` is not in a git work tree. */
async function gitFiles(root: string): Promise<string[] | undefined> {
  try {
    const { stdout } = await promisify(execFile)(
      'git',
      ['-C', root, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
      { maxBuffer: 256 * 1024 * 1024 },
    );
    return stdout.split('\0').filter((path) => path !== '');
  } catch {
    return undefined;
  }
}

function walk(root: string, excluded: (path: string) => boolean): string[] {
  const found: string[] = [];
  const visit = (dir: string) => {
    for (const item of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, item.name);
      const path = relative(root, full).split(sep).join('/');
      if (excluded(path)) continue;
      found.push(path);
      if (item.isDirectory()) visit(full);
    }
  };
  visit(root);
  return found;
}

/** The manifest of `root` minus the excluded paths (and, with `gitignore`, what git ignores). */
export async function hostManifest(root: string, exclude: string[], gitignore: boolean): Promise<Manifest> {
  const excluded = globMatcher(exclude);
  const listed = gitignore ? await gitFiles(root) : undefined;
  let paths: string[];
  if (listed) {
    const withParents = new Set<string>();
    for (const path of listed) {
      if (excluded(path)) continue;
      withParents.add(path);
      for (let slash = path.lastIndexOf('/'); slash > 0; slash = path.lastIndexOf('/', slash - 1)) {
        withParents.add(path.slice(0, slash));
      }
    }
    paths = [...withParents];
  } else {
    paths = walk(root, excluded);
  }
  const manifest: Manifest = {};
  for (const path of paths) {
    const entry = entryOf(join(root, path));
    if (entry) manifest[path] = entry;
  }
  return manifest;
}

export interface SyncPlan {
  /** Entries to send, parents before children. */
  send: string[];
  /** Paths to remove in the guest first: deleted ones, and replaced non-folders. */
  remove: string[];
  deleted: string[];
  unchanged: number;
  bytes: number;
}

const same = (a: Entry, b: Entry) =>
  a.type === b.type &&
  a.size === b.size &&
  a.mtimeMs === b.mtimeMs &&
  a.mode === b.mode &&
  a.target === b.target;

/** What moves when the guest holds `previous` and the host `current`. */
export function planSync(previous: Manifest, current: Manifest): SyncPlan {
  const send: string[] = [];
  const remove: string[] = [];
  const deleted: string[] = [];
  let unchanged = 0;
  let bytes = 0;
  for (const [path, entry] of Object.entries(current)) {
    const before = previous[path];
    if (before && same(before, entry)) {
      unchanged++;
      continue;
    }
    send.push(path);
    bytes += entry.size;
    if (before && (before.type !== 'dir' || entry.type !== 'dir')) remove.push(path);
  }
  for (const path of Object.keys(previous)) {
    if (current[path]) continue;
    deleted.push(path);
    // A folder removed whole takes its contents along.
    const parent = path.slice(0, path.lastIndexOf('/'));
    if (!(parent && !current[parent] && previous[parent])) remove.push(path);
  }
  send.sort();
  return { send, remove, deleted, unchanged, bytes };
}

import {
  closeSync,
  constants,
  fchownSync,
  fstatSync,
  mkdirSync,
  openSync,
  readSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ConfigError } from '../errors.js';

/**
 * Creates a folder and its missing parents, one level at a time. Node's recursive mkdir can spin
 * without end under /proc (ENOENT for a path whose parent exists); this fails at once instead.
 */
export async function ensureDir(path: string): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (info?.isDirectory()) return;
  const parent = dirname(path);
  if (parent !== path) await ensureDir(parent);
  await mkdir(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EEXIST') throw error;
  });
}

/** ensureDir, synchronously; `mode` applies to the folders it creates. */
export function ensureDirSync(path: string, mode?: number): void {
  if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) return;
  const parent = dirname(path);
  if (parent !== path) ensureDirSync(parent, mode);
  try {
    mkdirSync(path, mode === undefined ? undefined : { mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}

/**
 * Reads a file that someone else may control (a jailed VMM's folder, as root): never through a
 * symbolic link at its last component, never a FIFO or device (which could block or leak), at
 * most `maxBytes` from its start.
 */
export function readPlainFile(path: string, maxBytes = 64 * 2 ** 20): Buffer {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: 'EINVAL' });
    const buffer = Buffer.alloc(Math.min(info.size, maxBytes));
    const read = readSync(fd, buffer, 0, buffer.length, 0);
    return buffer.subarray(0, read);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `data` as a new file at `path`, whatever was there removed first: a link or file put
 * there by someone else is unlinked, never written through (O_EXCL fails on one that reappears).
 */
export function writeFreshFile(path: string, data: string | Uint8Array, mode = 0o600, uid?: number): void {
  rmSync(path, { force: true });
  const fd = openSync(path, 'wx', mode);
  try {
    if (uid !== undefined) fchownSync(fd, uid, uid);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads a file a user named (a document, a recipe, a secret) as UTF-8: only a regular file, and
 * at most `maxBytes`. /dev/zero would be read without end and a FIFO would block; both, and a
 * file over the cap, are a ConfigError naming `what`.
 */
export function readInputFile(path: string, what: string, maxBytes = 4 * 1024 * 1024): string {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw new ConfigError(`${what} ${path}: cannot read it: ${(error as Error).message}`);
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) throw new ConfigError(`${what} ${path}: not a regular file`);
    if (info.size > maxBytes) {
      throw new ConfigError(`${what} ${path}: ${info.size} bytes, more than the ${maxBytes} allowed`);
    }
    const buffer = Buffer.alloc(info.size + 1); // one more: a file that grows is seen growing
    let length = 0;
    for (let read = -1; read !== 0 && length < buffer.length; length += read) {
      read = readSync(fd, buffer, length, buffer.length - length, null);
    }
    if (length > info.size) throw new ConfigError(`${what} ${path}: it changed while being read`);
    return buffer.subarray(0, length).toString('utf8');
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`${what} ${path}: cannot read it: ${(error as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

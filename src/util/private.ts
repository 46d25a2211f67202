import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError } from '../errors.js';

/**
 * vmkit's state is its user's alone, whatever the umask: a folder that holds a VMM's sockets is
 * 0700 (a socket is reached through its folder), the sockets themselves 0600, and files are
 * written 0600. A mode given to mkdir or open is masked by the umask, which only ever narrows it;
 * chmod afterwards makes it exact (a umask of 0700 would otherwise leave a folder unusable).
 */
export const PRIVATE_DIR = 0o700;
export const PRIVATE_FILE = 0o600;

const myUid = () => process.geteuid?.() ?? process.getuid?.();

/** Creates a fresh folder, 0700 whatever the umask; throws EEXIST when it is there already. */
export function makePrivateDir(path: string): void {
  mkdirSync(path, { mode: PRIVATE_DIR });
  chmodSync(path, PRIVATE_DIR);
}

/**
 * Makes `path` (and any missing parent) a folder only its owner may use. An existing folder must
 * belong to this user (or to one of `owners`): one another user made first, in /tmp say, would
 * let that user watch or replace what vmkit puts in it, so it is refused (ConfigError) rather
 * than used. One with any group or other bit is narrowed to 0700 (`mode` when given), but for
 * the group's read and search bits with `keepGroup` (a folder shared with a group on purpose).
 */
export function ensurePrivateDir(
  path: string,
  options: { mode?: number; owners?: number[]; keepGroup?: boolean } = {},
): void {
  const mode = options.mode ?? PRIVATE_DIR;
  const info = statSync(path, { throwIfNoEntry: false });
  if (!info) {
    const parent = dirname(path);
    if (parent !== path && !statSync(parent, { throwIfNoEntry: false })) ensurePrivateDir(parent);
    try {
      mkdirSync(path, { mode });
      chmodSync(path, mode);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    ensurePrivateDir(path, options); // made by another process meanwhile: check it
    return;
  }
  if (!info.isDirectory()) throw new ConfigError(`${path} is not a folder`);
  const uid = myUid();
  if (uid !== undefined && info.uid !== uid && !options.owners?.includes(info.uid)) {
    throw new ConfigError(
      `${path} belongs to uid ${info.uid}, not to this user (uid ${uid}): whoever made it could reach what vmkit keeps there; remove it or choose another folder`,
    );
  }
  const allowed = mode | (options.keepGroup ? 0o050 : 0);
  if ((info.mode & 0o777 & ~allowed) !== 0) chmodSync(path, info.mode & allowed);
}

/** Narrows a socket another program (or Node's listen) made under the umask to its owner. */
export function privateSocket(path: string): void {
  chmodSync(path, PRIVATE_FILE);
}

/**
 * A command line that runs `program args` with umask 077, so that every file and socket it makes
 * (QEMU's listening sockets, logs, guest RAM files, migration streams) is its user's alone.
 * Node's spawn has no umask of its own, and changing this process's is global to it.
 */
export function withPrivateUmask(program: string, args: string[]): { program: string; args: string[] } {
  return { program: '/bin/sh', args: ['-c', 'umask 077 && exec "$0" "$@"', program, ...args] };
}

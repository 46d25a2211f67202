import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where built images and snapshots live. VMKIT_CACHE_DIR overrides the XDG location. */
export function cacheDir(): string {
  if (process.env.VMKIT_CACHE_DIR) return process.env.VMKIT_CACHE_DIR;
  const xdg = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(xdg, 'vmkit');
}

/**
 * Where running machines keep sockets, logs and disks. Kept short: unix socket paths
 * are limited to 107 bytes. VMKIT_RUN_DIR overrides it.
 */
export function runtimeRoot(): string {
  return process.env.VMKIT_RUN_DIR || sharedRuntimeRoot();
}

/** The run root in the shared temp folder, where another user could have made it first. */
export function sharedRuntimeRoot(): string {
  const uid = process.getuid?.() ?? 'user';
  return join(tmpdir(), `vmkit-${uid}`);
}

/** The folder that holds the guest-side files shipped with vmkit. */
export function guestFilesDir(): string {
  return new URL('../../guest/', import.meta.url).pathname;
}

import { renameSync } from 'node:fs';
import { join } from 'node:path';
import type { ReadOnlyDiskSpec } from '../../backends/backend.js';
import { ConfigError } from '../../errors.js';
import { writeFreshFile } from '../../util/files.js';

/**
 * Tenant secrets reach the guest on a small read-only disk (`/dev/vdb`), written afresh before
 * every start and wake, so that a changed secret shows at the next one. The disk is a file of
 * the instance's folder, never part of a base or sleep state; a pool's base sees a blank one.
 * The guest reads it with O_DIRECT (GUEST_READ_SECRETS), which leaves no copy in its page cache.
 */

/** Fixed: the guest learns a disk's size once, and bases and sleep states keep what it learned. */
export const SECRETS_DISK_BYTES = 1024 * 1024;
/** The secrets as JSON, from inside the guest (NUL padding removed). */
export const GUEST_READ_SECRETS = `dd if=/dev/vdb bs=${SECRETS_DISK_BYTES} count=1 iflag=direct 2>/dev/null | tr -d '\\000'`;

export const secretsDiskPath = (dir: string) => join(dir, 'secrets.img');

/** Writes the folder's secrets disk: the secrets as one JSON line, then zeros (blank without secrets). */
export function writeSecretsDisk(dir: string, secrets: Record<string, string> = {}): void {
  const text = Buffer.from(Object.keys(secrets).length > 0 ? `${JSON.stringify(secrets)}\n` : '');
  if (text.length > SECRETS_DISK_BYTES) {
    throw new ConfigError(
      `secrets of ${text.length} bytes do not fit the ${SECRETS_DISK_BYTES}-byte secrets disk`,
    );
  }
  const disk = Buffer.alloc(SECRETS_DISK_BYTES);
  text.copy(disk);
  const partial = `${secretsDiskPath(dir)}.part`;
  writeFreshFile(partial, disk, 0o600); // in the VMM's folder: never through a link it left there
  renameSync(partial, secretsDiskPath(dir));
}

/** The folder's secrets disk, read-only, attached after the data disk. */
export const secretsDisk = (dir: string): ReadOnlyDiskSpec => ({
  id: 'secrets',
  path: secretsDiskPath(dir),
  format: 'raw',
});

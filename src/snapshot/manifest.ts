import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import type { BootImage } from '../images/types.js';
import type { ConfigIdentity } from '../machine/config.js';
import { cacheDir } from '../util/paths.js';

/** Bumped whenever the layout of a snapshot folder changes. */
export const SNAPSHOT_FORMAT = 4;

export interface FileRecord {
  /** sparseDigest(): SHA-256 over the file's length and its non-zero blocks with their offsets. */
  digest: string;
  bytes: number;
}

/** What a snapshot folder holds, as written to its manifest.json. */
export interface SnapshotManifest {
  format: typeof SNAPSHOT_FORMAT;
  id: string;
  name: string;
  createdAt: string;
  /** The machine it was taken from. */
  source: string;
  identity: ConfigIdentity;
  image: BootImage;
  macs: string[];
  /** Each switch NIC as the guest has it set up: its MAC (new for a renumbered clone) and address. */
  nics: GuestNicState[];
  /** The source allowed reboots from inside the guest: its clones do too, unless told otherwise. */
  allowReboot?: boolean;
  /** Guest RAM travels in the saved state instead of a RAM file (snapshots of clones). */
  ramInStream: boolean;
  files: Record<string, FileRecord>;
}

export interface GuestNicState {
  mac: string;
  address?: string;
}

/** A snapshot as stored: its manifest and its folder. */
export interface SnapshotRecord {
  readonly manifest: SnapshotManifest;
  readonly dir: string;
}

/** The snapshot store (and the boot cache in it): VMKIT_SNAPSHOT_DIR, or `snapshots` in the cache folder. */
export const snapshotRoot = () => process.env.VMKIT_SNAPSHOT_DIR || join(cacheDir(), 'snapshots');

/** The names of the boot cache's entries (see boot-cache.ts): not the user's snapshots. */
export const BOOT_CACHE_PREFIX = 'boot.';

const SNAPSHOT_NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

export function validateSnapshotName(name: unknown): string {
  if (typeof name !== 'string' || !SNAPSHOT_NAME.test(name)) {
    throw new ConfigError(`invalid snapshot name ${JSON.stringify(name)}: use 1 to 64 of a-z 0-9 . _ -`);
  }
  return name;
}

/** The id a named snapshot gets: its name plus a hash of the configuration (and key) it needs. */
export function snapshotId(name: string, identity: ConfigIdentity, key?: unknown): string {
  return `${validateSnapshotName(name)}-${hashOf(key === undefined ? identity : { identity, key }).slice(0, 12)}`;
}

export function hashOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

import type { Accel } from '../backends/accel.js';
import type { ExtraDisk, HostNicSpec } from '../backends/backend.js';
import type { BootImage } from '../images/types.js';
import type { MediaConfig } from './media.js';

export interface DiskSpec {
  sizeMiB: number;
  /** A qcow2 base the disk is a copy-on-write overlay of (an image's root disk). */
  base?: string;
}

/**
 * Everything about a machine that the VMM's device model depends on. A snapshot can only be
 * restored into a VMM with exactly this configuration (the same backend, in the same version).
 */
export interface MachineConfig {
  backend: string;
  image: BootImage;
  memoryMiB: number;
  cpus: number;
  accel: Accel;
  /** How many NICs; each is attached to a switch, or to nothing. */
  nics: number;
  macs: string[];
  disks: DiskSpec[];
  /** A screen: a VGA card for screenshots and virtual terminals. */
  display?: boolean;
  /** A reboot inside the guest restarts it instead of ending the VMM. */
  allowReboot?: boolean;
  /** Extra VMM arguments, as given. */
  qemuArgs: string[];
  /** Disk files attached as they are, after `disks` (absolute paths); absent when none. */
  extraDisks?: ExtraDisk[];
  /** The NIC to the host (user-mode networking), after the switch NICs; none where the backend has none. */
  hostNic?: HostNicSpec;
  /** Boot media the user brought (then `image` only names them); none for vmkit's images. */
  media?: MediaConfig;
  /** false: the guest has no vmkit backdoor and is driven by its console (absent: it has one). */
  backdoor?: boolean;
}

/** The parts of a configuration that must match for a restore, as plain data. */
export function configIdentity(config: MachineConfig, vmmVersion: string) {
  return {
    backend: config.backend,
    imageKey: config.image.key,
    memoryMiB: config.memoryMiB,
    cpus: config.cpus,
    accel: config.accel,
    nics: config.nics,
    disks: config.disks.map((disk) => disk.sizeMiB),
    qemuArgs: config.qemuArgs,
    // Only when there are some, so that the ids of snapshots without any stay as they were.
    ...(config.extraDisks?.length ? { extraDisks: config.extraDisks } : {}),
    hostNic: config.hostNic ?? null,
    // Only when set, so that the identities (and ids) of snapshots without a screen stay as they were.
    ...(config.display ? { display: true } : {}),
    vmmVersion,
  };
}

export type ConfigIdentity = ReturnType<typeof configIdentity>;

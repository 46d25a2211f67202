import type { Accel } from '../hypervisor/accel.js';
import type { BootImage } from '../image/types.js';

export interface DiskSpec {
  sizeMiB: number;
}

/**
 * Everything about a machine that QEMU's device model depends on. A snapshot can only be
 * restored into a QEMU with exactly this configuration (and the same QEMU version).
 */
export interface MachineConfig {
  image: BootImage;
  memoryMiB: number;
  cpus: number;
  accel: Accel;
  /** How many NICs; each is attached to a switch, or to nothing. */
  nics: number;
  macs: string[];
  disks: DiskSpec[];
  qemuArgs: string[];
}

/** The parts of a configuration that must match for a restore, as plain data. */
export function configIdentity(config: MachineConfig, qemuVersion: string) {
  return {
    imageKey: config.image.key,
    memoryMiB: config.memoryMiB,
    cpus: config.cpus,
    accel: config.accel,
    nics: config.nics,
    disks: config.disks.map((disk) => disk.sizeMiB),
    qemuArgs: config.qemuArgs,
    qemuVersion,
  };
}

export type ConfigIdentity = ReturnType<typeof configIdentity>;

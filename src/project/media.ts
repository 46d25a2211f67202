import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { FirmwareBoot } from '../backends/backend.js';
import { ConfigError } from '../errors.js';
import type { BootImage } from '../images/types.js';
import { OVMF, resolveMedia } from '../machine/media.js';
import { type IsoImageConfig, isIsoImage, type MediaImageConfig } from './media-config.js';
import { readJson } from './state.js';
import type { ProjectVm } from './vm-handle.js';

/** What a project VM boots from media: its root disk's base and how the firmware boots it. */
export interface MediaBootImage extends BootImage {
  disk: string;
  diskFormat: 'raw' | 'qcow2';
  firmware: 'bios' | 'uefi';
}

export const isMediaBoot = (image: BootImage): image is MediaBootImage =>
  'firmware' in image && image.kernel === '';

/** The disk an ISO installed onto: the VM's base from then on, never written again. */
export const installedDisk = (dir: string) => join(dir, 'installed.qcow2');
export const installRecordPath = (dir: string) => join(dir, 'installed.json');
export const imageField = (pvm: ProjectVm) => `vms.${pvm.vm.name}.image`;

/** Identifies an install: the ISO, the steps (a steps file by its text), the disk size and firmware. */
export function installKey(pvm: ProjectVm, image: IsoImageConfig): string {
  const steps =
    typeof image.install === 'string' ? readFileSafe(join(pvm.project.root, image.install)) : image.install;
  const what = {
    iso: resolve(pvm.project.root, image.iso),
    steps,
    diskMiB: image.diskMiB,
    firmware: image.firmware,
  };
  const text = JSON.stringify(what, (_key, value) => (value instanceof RegExp ? String(value) : value));
  return `install:${createHash('sha256').update(text).digest('hex').slice(0, 16)}`;
}

const readFileSafe = (path: string) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
};

/** Whether the VM still has to install from its ISO; refuses a disk installed from other media. */
export function needsInstall(pvm: ProjectVm, image: IsoImageConfig): boolean {
  const recorded = readJson<{ key: string }>(installRecordPath(pvm.dir));
  if (!recorded || !existsSync(installedDisk(pvm.dir))) return true;
  if (recorded.key !== installKey(pvm, image)) {
    throw new ConfigError(
      `${imageField(pvm)}: VM ${pvm.vm.name} was installed with other media or steps; vmkit destroy ${pvm.vm.name} to install again`,
    );
  }
  return false;
}

/** The user's media file, checked: the error names the config field and the file. */
export async function checkedMedia(
  pvm: ProjectVm,
  media: { iso: string } | { disk: string },
  firmware: 'bios' | 'uefi',
) {
  const absolute = Object.fromEntries(
    Object.entries(media).map(([kind, path]) => [kind, resolve(pvm.project.root, path)]),
  ) as { iso: string } | { disk: string };
  try {
    return await resolveMedia(absolute, firmware);
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(`vms.${pvm.vm.name}.${error.message}`);
    throw error;
  }
}

/** The boot image of a media VM: the user's disk, or the disk its ISO installed onto. */
export async function mediaBootImage(pvm: ProjectVm, image: MediaImageConfig): Promise<MediaBootImage> {
  const base = {
    dir: '',
    kernel: '',
    initrd: '',
    cmdline: '',
    kernelRelease: '',
    profile: image.agent ?? 'foreign',
    firmware: image.firmware,
  };
  if (isIsoImage(image)) {
    const disk = installedDisk(pvm.dir);
    if (needsInstall(pvm, image)) {
      throw new ConfigError(
        `VM ${pvm.vm.name} is not installed yet (vmkit up installs it from ${image.iso})`,
      );
    }
    return {
      ...base,
      name: `installed:${image.iso}`,
      key: installKey(pvm, image),
      disk,
      diskFormat: 'qcow2',
    };
  }
  const media = await checkedMedia(pvm, { disk: image.disk }, image.firmware);
  const disk = media.files.disk as string;
  // A changed base file gets a fresh overlay: an overlay on a base that changed under it is garbage.
  const { size, mtimeMs } = statSync(disk);
  return {
    ...base,
    name: `disk:${image.disk}`,
    key: `media:disk:${disk}:${size}:${Math.round(mtimeMs)}`,
    disk,
    diskFormat: media.diskFormat ?? 'raw',
  };
}

/** How QEMU's firmware boots the VM: its root disk, after the ISO when one is given. */
export function firmwareBoot(pvm: ProjectVm, firmware: 'bios' | 'uefi', cdrom?: string): FirmwareBoot {
  const boot: FirmwareBoot = { firmware, order: cdrom ? ['cdrom', 'disk'] : ['disk'] };
  if (cdrom) boot.cdrom = cdrom;
  if (firmware === 'uefi') {
    // One variable store per VM, kept: an installer's boot entries are there.
    boot.uefiCode = OVMF.code;
    boot.uefiVars = join(pvm.dir, 'uefi-vars.fd');
    if (!existsSync(boot.uefiVars)) copyFileSync(OVMF.vars, boot.uefiVars);
  }
  return boot;
}

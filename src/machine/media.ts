import { constants, existsSync } from 'node:fs';
import { access, copyFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import type { FirmwareBoot, Vmm } from '../backends/backend.js';
import { ConfigError } from '../errors.js';
import type { BootImage } from '../images/types.js';
import { runTool } from '../util/exec.js';
import { cacheDir } from '../util/paths.js';
import { ensurePrivateDir } from '../util/private.js';
import { createQcow2 } from '../util/qcow2.js';

/** Boot media the user brings, booted as they are: vmkit never writes to them. */
export type UserMedia =
  | { iso: string }
  | { disk: string }
  | { kernel: string; initrd?: string; append?: string };

export type Firmware = 'bios' | 'uefi';
export type BootDevice = 'cdrom' | 'disk' | 'network';

const path = z.string({ error: 'must be a file path' }).min(1, { error: 'must not be empty' });

export const userMediaSchema = z.union(
  [
    z.object({ iso: path }).strict(),
    z.object({ disk: path }).strict(),
    z.object({ kernel: path, initrd: path.optional(), append: z.string().max(4096).optional() }).strict(),
  ],
  { error: 'must be { iso }, { disk } or { kernel, initrd?, append? }' },
);

export const isUserMedia = (value: unknown): value is UserMedia =>
  typeof value === 'object' &&
  value !== null &&
  ['iso', 'disk', 'kernel'].some((field) => field in value) &&
  !('key' in value);

export const firmwareSchema = z.enum(['bios', 'uefi'], { error: 'must be bios or uefi' });
export const bootOrderSchema = z
  .array(z.enum(['cdrom', 'disk', 'network'], { error: 'must be cdrom, disk or network' }))
  .min(1)
  .max(3);

/** User media checked and resolved, as the machine's configuration holds them. */
export interface MediaConfig {
  kind: 'iso' | 'disk' | 'kernel';
  /** Absolute paths of the user's files. */
  files: Record<string, string>;
  diskFormat?: 'raw' | 'qcow2';
  append?: string;
  firmware: Firmware;
  bootOrder: BootDevice[];
}

/** Debian's `ovmf` package: the UEFI code (read-only) and the template of its variable store. */
export const OVMF = {
  code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
  vars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
};

async function readable(what: string, file: string): Promise<string> {
  const full = resolve(file);
  const info = await stat(full).catch((error: NodeJS.ErrnoException) => {
    throw new ConfigError(`image.${what}: cannot use ${file}: ${error.code ?? error.message}`);
  });
  if (!info.isFile()) throw new ConfigError(`image.${what}: ${file} is not a regular file`);
  await access(full, constants.R_OK).catch(() => {
    throw new ConfigError(`image.${what}: ${file} is not readable`);
  });
  return full;
}

/** Checks the user's media before any VMM starts: each file exists and is readable, the firmware is there. */
export async function resolveMedia(
  media: UserMedia,
  firmware: Firmware,
  bootOrder?: BootDevice[],
): Promise<MediaConfig> {
  if (firmware === 'uefi' && !existsSync(OVMF.code)) {
    throw new ConfigError(
      `firmware: uefi needs OVMF (${OVMF.code}); install Debian's ovmf package (apt-get install ovmf)`,
    );
  }
  if ('iso' in media) {
    return {
      kind: 'iso',
      files: { iso: await readable('iso', media.iso) },
      firmware,
      bootOrder: bootOrder ?? ['cdrom', 'disk'],
    };
  }
  if ('disk' in media) {
    const disk = await readable('disk', media.disk);
    return {
      kind: 'disk',
      files: { disk },
      diskFormat: await diskFormat(disk),
      firmware,
      bootOrder: bootOrder ?? ['disk'],
    };
  }
  const files: Record<string, string> = { kernel: await readable('kernel', media.kernel) };
  if (media.initrd) files.initrd = await readable('initrd', media.initrd);
  return { kind: 'kernel', files, append: media.append ?? '', firmware, bootOrder: bootOrder ?? ['disk'] };
}

async function diskFormat(file: string): Promise<'raw' | 'qcow2'> {
  const { stdout } = await runTool('qemu-img', ['info', '--output=json', file]);
  const format = (JSON.parse(stdout) as { format?: string }).format;
  if (format === 'qcow2' || format === 'raw') return format;
  throw new ConfigError(`image.disk: ${file} is a ${format} image; vmkit boots raw and qcow2 disks`);
}

/** What stands in for an image in the configuration of a machine booted from user media. */
export function mediaImage(media: MediaConfig): BootImage {
  const source = Object.values(media.files).join(' ');
  return {
    name: `${media.kind}:${source}`,
    key: `media:${media.kind}:${source}`,
    dir: '',
    kernel: '',
    initrd: '',
    cmdline: media.append ?? '',
    kernelRelease: '',
    profile: 'foreign',
  };
}

/**
 * What the machine's state folder needs for the media: a copy-on-write overlay over a user disk,
 * and a private UEFI variable store. Returns how the VMM boots.
 */
export async function prepareMedia(media: MediaConfig, stateDir: string): Promise<FirmwareBoot> {
  const boot: FirmwareBoot = { firmware: media.firmware, order: media.bootOrder };
  if (media.kind === 'iso') boot.cdrom = media.files.iso;
  if (media.kind === 'disk') {
    const overlay = join(stateDir, 'boot.qcow2');
    await createQcow2(overlay, { base: media.files.disk as string, baseFormat: media.diskFormat ?? 'raw' });
    boot.disk = overlay;
  }
  if (media.firmware === 'uefi') {
    boot.uefiCode = OVMF.code;
    boot.uefiVars = join(stateDir, 'uefi-vars.fd');
    await copyFile(OVMF.vars, boot.uefiVars);
  }
  return boot;
}

/** Where saved disk images live: `<cache>/disk-images/<name>.qcow2`. */
export function savedDiskPath(name: string): string {
  return join(cacheDir(), 'disk-images', `${name}.qcow2`);
}

const SAVED_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Which disk saveDiskImage keeps: `disk` indexes the machine's `disks` option. */
export interface SaveDiskOptions {
  disk?: number;
}

/**
 * The qcow2 file saveDiskImage reads: the boot disk's overlay of a machine started from
 * `{ disk }` unless `options.disk` is given, else that one of its `disks` (an image's own root
 * disk, which comes first in `disks`, is not counted).
 */
function diskToSave(
  machine: { name: string; disks: string[]; config: { media?: MediaConfig; image: BootImage } },
  stateDir: string,
  options: SaveDiskOptions,
): string {
  if (options.disk === undefined && machine.config.media?.kind === 'disk')
    return join(stateDir, 'boot.qcow2');
  const own = machine.disks.slice(machine.config.image.disk ? 1 : 0);
  if (own.length === 0) {
    throw new ConfigError(
      `saveDiskImage: machine ${machine.name} has no disk to save: start it with image: { disk } (its boot disk is saved) or with disks: [{ sizeMiB }] (saveDiskImage(name, { disk: index }))`,
    );
  }
  const index = options.disk ?? 0;
  const file = own[index];
  if (file === undefined) {
    throw new ConfigError(
      `saveDiskImage: options: disk: machine ${machine.name} has ${own.length} disk(s) in disks, numbered from 0; there is no disk ${index}`,
    );
  }
  return file;
}

/**
 * Keeps a disk of a machine (the disk an installer wrote, say) as an image in the cache: flattened
 * into one qcow2, written beside its place and renamed into it. A running guest is paused
 * meanwhile; a guest that powered off can be saved until the machine is closed. Returns media for
 * `startMachine({ image })`.
 */
export async function saveDiskImage(
  machine: { name: string; vmm: Vmm; disks: string[]; config: { media?: MediaConfig; image: BootImage } },
  stateDir: string,
  name: string,
  options: SaveDiskOptions = {},
): Promise<{ disk: string }> {
  if (typeof name !== 'string' || !SAVED_NAME.test(name)) {
    throw new ConfigError(
      `saveDiskImage: name must be 1 to 64 of a-z 0-9 . _ - (got ${JSON.stringify(name)})`,
    );
  }
  const source = diskToSave(machine, stateDir, options);
  if (!existsSync(source)) {
    throw new ConfigError(`saveDiskImage: machine ${machine.name} was closed: its disks are gone`);
  }
  const target = savedDiskPath(name);
  ensurePrivateDir(dirname(target));
  const partial = `${target}.saving-${process.pid}`;
  // A guest that powered off has no VMM left to pause: its files are complete as they are.
  const running = !machine.vmm.hasExited;
  if (running) await machine.vmm.pause();
  try {
    // A stopped QEMU has flushed its writes; -U reads the image it still holds open.
    await runTool('qemu-img', ['convert', '-U', '-O', 'qcow2', source, partial]);
    await rename(partial, target);
  } finally {
    await rm(partial, { force: true });
    if (running && !machine.vmm.hasExited) await machine.vmm.resume();
  }
  return { disk: target };
}

import { z } from 'zod';
import type { AccelRequest } from '../backends/accel.js';
import type { Backend } from '../backends/backend.js';
import { BACKEND_NAMES } from '../backends/index.js';
import { IMAGE_NAMES } from '../images/build.js';
import type { ImageRecipe } from '../images/recipe.js';
import type { BootImage } from '../images/types.js';
import { VirtualSwitch } from '../network/switch.js';
import { Runtime } from '../runtime/runtime.js';
import {
  abortSignal,
  callback,
  hostsMap,
  instanceOf,
  ipv4Cidr,
  machineName,
  parseInput,
  timeoutMs,
  wholeNumber,
} from '../util/validate.js';
import { type ExtraDisk, extraDisksSchema } from './extra-disks.js';
import {
  type BootDevice,
  bootOrderSchema,
  type Firmware,
  firmwareSchema,
  isUserMedia,
  type UserMedia,
  userMediaSchema,
} from './media.js';

export interface NetworkAttachment {
  switch: VirtualSwitch;
  /** Address with prefix length, e.g. "10.0.0.2/24". Without one the interface is only brought up. */
  address?: string;
}

export interface MachineOptions {
  /** Lower-case letters, digits, '-' and '_'; at most 32 characters. Also the guest's hostname. */
  name: string;
  /**
   * An image name ("tiny", "debian"), a recipe for a derived image (`{ base: 'debian', packages }`,
   * built and cached on first use), a built image from buildImage(), or media you bring: `{ iso }`,
   * `{ disk }` (raw or qcow2; never written: the machine runs on an overlay) or
   * `{ kernel, initrd?, append? }`. Defaults to "tiny".
   */
  image?: string | BootImage | ImageRecipe | UserMedia;
  /** BIOS (SeaBIOS, the default) or UEFI (OVMF, from Debian's ovmf package). */
  firmware?: Firmware;
  /** Boot devices in the order the firmware tries them; default cdrom then disk for an ISO. */
  bootOrder?: BootDevice[];
  /**
   * Whether the guest runs vmkit's backdoor; default true for vmkit's images, false for your
   * media. Without it, drive the guest with machine.console and machine.consoleShell().
   */
  backdoor?: boolean;
  /**
   * Without the backdoor: when the machine counts as up. A console pattern (a login prompt, say),
   * or 'ssh' for an SSH banner on machine.sshPort. By default as soon as the VMM runs.
   */
  readyWhen?: RegExp | string | 'ssh';
  /** Guest memory, 64 MiB at least (default 256). */
  memoryMiB?: number;
  cpus?: number;
  accel?: AccelRequest;
  /** How long boot may take until the guest agent answers. */
  timeoutMs?: number;
  /** Default timeout of execute() and friends. */
  commandTimeoutMs?: number;
  networks?: NetworkAttachment[];
  /** Blank qcow2 disks, attached as /dev/vda, /dev/vdb, ... (snapshots include them). */
  disks?: Array<{ sizeMiB: number }>;
  /**
   * Disk files you bring, attached as they are after the machine's own disks (which keep
   * /dev/vda, ...): the guest finds each as /dev/disk/by-id/virtio-<serial>. The guest writes to
   * the file in place unless `readOnly`; snapshots do not copy them, and a restore attaches the
   * same files again. At most 8.
   */
  extraDisks?: ExtraDisk[];
  /** Lines for /etc/hosts, e.g. { server: "10.0.0.1" }. */
  hosts?: Record<string, string>;
  /** Receives progress lines (boot, accelerator choice, shutdown). */
  log?: (line: string) => void;
  /** Aborting it stops a boot in progress. */
  signal?: AbortSignal;
  /** Extra QEMU arguments, appended as given. */
  qemuArgs?: string[];
  /** A reboot from inside the guest restarts it instead of ending the machine (default false). */
  allowReboot?: boolean;
  /** A screen (QEMU -vga std): screenshot(), sendKey(), sendChars(), getTtyText() (default false). */
  display?: boolean;
  /** The VMM that runs the machine: a name (default "qemu"), or a backend such as mockBackend({ script }). */
  backend?: string | Backend;
  /**
   * Outbound access to the host's network through the machine's own NIC to the host. Off by
   * default: the guest then has no route out.
   */
  internet?: boolean;
  /**
   * Host services the guest may reach by name: `{ api: 8080 }` makes `api:8080` in the guest lead to
   * port 8080 on the host's loopback. Nothing else on the host is reachable.
   */
  hostServices?: Record<string, number>;
  /** The context the machine lives in (run folder, process tracking); default: the process's. */
  runtime?: Runtime;
  /**
   * Boot for real, instead of restoring the booted state the boot cache holds for this
   * configuration (for tests of boot itself). Default false; VMKIT_BOOT_CACHE=off sets it for all.
   */
  fresh?: boolean;
}

export const DEFAULTS = {
  memoryMiB: 256,
  cpus: 1,
  timeoutMs: 120_000,
  commandTimeoutMs: 120_000,
};

/** Below this the tiny image's kernel dies silently while unpacking its initramfs (64 MiB does). */
export const MIN_MEMORY_MIB = 96;

const networkAttachment = z
  .object({
    switch: instanceOf(VirtualSwitch, 'VirtualSwitch (from VirtualSwitch.create())'),
    address: ipv4Cidr.optional(),
  })
  .strict();

const isBootImage = (value: unknown) =>
  typeof value === 'object' &&
  value !== null &&
  ['name', 'key', 'kernel', 'initrd', 'cmdline'].every(
    (field) => typeof (value as Record<string, unknown>)[field] === 'string',
  );

const isBackend = (value: unknown) =>
  typeof value === 'object' &&
  value !== null &&
  typeof (value as Backend).name === 'string' &&
  typeof (value as Backend).launch === 'function' &&
  typeof (value as Backend).version === 'function' &&
  typeof (value as Backend).capabilities === 'object';

/** A recipe is checked in full by buildImage; here it is recognised by its base. */
const isRecipe = (value: unknown) =>
  typeof value === 'object' && value !== null && typeof (value as { base?: unknown }).base === 'string';

const imageChoice = z.custom<string | BootImage | ImageRecipe | UserMedia>(
  (value) =>
    typeof value === 'string'
      ? (IMAGE_NAMES as readonly string[]).includes(value)
      : isBootImage(value) ||
        isRecipe(value) ||
        (isUserMedia(value) && userMediaSchema.safeParse(value).success),
  {
    error: (issue) =>
      typeof issue.input === 'string'
        ? `unknown image ${JSON.stringify(issue.input)} (known images: ${IMAGE_NAMES.join(', ')})`
        : isUserMedia(issue.input)
          ? 'must be { iso }, { disk } or { kernel, initrd?, append? }, each a file path (append: a string)'
          : 'must be an image name, a recipe like { base: "debian" }, a BootImage from buildImage(), or { iso } / { disk } / { kernel }',
  },
);

/** The options every way of getting a machine shares (boot, restore). */
export const commonMachineFields = {
  accel: z.enum(['auto', 'kvm', 'tcg'], { error: 'must be auto, kvm or tcg' }).optional(),
  timeoutMs: timeoutMs.optional(),
  commandTimeoutMs: timeoutMs.optional(),
  networks: z.array(networkAttachment).max(16).optional(),
  hosts: hostsMap.optional(),
  log: callback.optional(),
  signal: abortSignal.optional(),
  runtime: instanceOf(Runtime, 'Runtime').optional(),
};

/** Fields a test declares for a machine (the driver adds name, networks, hosts, log, signal). */
export const declaredMachineFields = {
  image: imageChoice.optional(),
  memoryMiB: wholeNumber(MIN_MEMORY_MIB, 1024 * 1024).optional(),
  cpus: wholeNumber(1, 256).optional(),
  accel: commonMachineFields.accel,
  timeoutMs: commonMachineFields.timeoutMs,
  commandTimeoutMs: commonMachineFields.commandTimeoutMs,
  disks: z
    .array(z.object({ sizeMiB: wholeNumber(1, 16 * 1024 * 1024) }).strict())
    .max(16)
    .optional(),
  extraDisks: extraDisksSchema.optional(),
  qemuArgs: z.array(z.string({ error: 'must be a string' })).optional(),
  backend: z
    .custom<string | Backend>(
      (value) => (typeof value === 'string' ? BACKEND_NAMES.includes(value) : isBackend(value)),
      { error: `must be one of ${BACKEND_NAMES.join(', ')}, or a backend like mockBackend({ script })` },
    )
    .optional(),
  internet: z.boolean({ error: 'must be true or false' }).optional(),
  allowReboot: z.boolean({ error: 'must be true or false' }).optional(),
  display: z.boolean({ error: 'must be true or false' }).optional(),
  hostServices: z
    .record(
      z.string().regex(/^[a-z0-9](?:[a-z0-9-]{0,62})$/, {
        error: 'service names are lower-case letters, digits and dashes',
      }),
      wholeNumber(1, 65_535),
    )
    .refine((services) => Object.keys(services).length <= 100, { error: 'at most 100 host services' })
    .optional(),
  runtime: commonMachineFields.runtime,
  firmware: firmwareSchema.optional(),
  bootOrder: bootOrderSchema.optional(),
  backdoor: z.boolean({ error: 'must be true or false' }).optional(),
  readyWhen: z
    .union([z.instanceof(RegExp), z.string().min(1)], { error: "must be a RegExp, a string, or 'ssh'" })
    .optional(),
  fresh: z.boolean({ error: 'must be true or false' }).optional(),
};

const machineOptions = z
  .object({ ...commonMachineFields, ...declaredMachineFields, name: machineName })
  .strict();

/** Checks startMachine's options, naming the field and the value that is wrong. */
export function parseMachineOptions(options: unknown): MachineOptions {
  return parseInput(machineOptions, options, 'startMachine options') as MachineOptions;
}

/** Checks a machine name. */
export function validateName(name: unknown): string {
  return parseInput(machineName, name, 'invalid machine name');
}

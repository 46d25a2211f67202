import type { AccelRequest } from '../backends/accel.js';
import { ConfigError } from '../errors.js';
import type { BootImage } from '../images/types.js';
import type { VirtualSwitch } from '../network/switch.js';
import type { Runtime } from '../runtime/runtime.js';

export interface NetworkAttachment {
  switch: VirtualSwitch;
  /** Address with prefix length, e.g. "10.0.0.2/24". Without one the interface is only brought up. */
  address?: string;
}

export interface MachineOptions {
  /** Lower-case letters, digits, '-' and '_'; at most 32 characters. Also the guest's hostname. */
  name: string;
  /** An image name ("tiny") or a built image from buildImage(). Defaults to "tiny". */
  image?: string | BootImage;
  memoryMiB?: number;
  cpus?: number;
  accel?: AccelRequest;
  /** How long boot may take until the backdoor answers. */
  timeoutMs?: number;
  /** Default timeout of execute() and friends. */
  commandTimeoutMs?: number;
  networks?: NetworkAttachment[];
  /** Blank qcow2 disks, attached as /dev/vda, /dev/vdb, ... (snapshots include them). */
  disks?: Array<{ sizeMiB: number }>;
  /** Lines for /etc/hosts, e.g. { server: "10.0.0.1" }. */
  hosts?: Record<string, string>;
  /** Receives progress lines (boot, accelerator choice, shutdown). */
  log?: (line: string) => void;
  /** Aborting it stops a boot in progress. */
  signal?: AbortSignal;
  /** Extra QEMU arguments, appended as given. */
  qemuArgs?: string[];
  /** The VMM that runs the machine (default "qemu"). */
  backend?: string;
  /** The context the machine lives in (run folder, process tracking); default: the process's. */
  runtime?: Runtime;
}

export const DEFAULTS = {
  memoryMiB: 256,
  cpus: 1,
  timeoutMs: 120_000,
  commandTimeoutMs: 120_000,
};

const NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;

export function validateName(name: unknown): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new ConfigError(
      `invalid machine name ${JSON.stringify(name)}: use 1 to 32 lower-case letters, digits, '-' or '_', starting with a letter or digit`,
    );
  }
  return name;
}

export function validatePositive(
  what: string,
  value: number | undefined,
  fallback: number,
  max: number,
): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new ConfigError(`${what} must be a whole number from 1 to ${max}, not ${value}`);
  }
  return value;
}

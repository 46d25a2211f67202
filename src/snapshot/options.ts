import { z } from 'zod';
import type { AccelRequest } from '../backends/accel.js';
import { commonMachineFields, MIN_MEMORY_MIB, type NetworkAttachment } from '../machine/options.js';
import type { Runtime } from '../runtime/runtime.js';
import { machineName, parseInput, wholeNumber } from '../util/validate.js';

/** The options of restore, fork and pool, declared once; errors name the field and the value. */

export interface RestoreOptions {
  /** Defaults to the name of the machine the snapshot was taken from. */
  name?: string;
  /** Switches for the snapshot's NICs, in order; with an address the NIC also gets a new MAC. */
  networks?: NetworkAttachment[];
  hosts?: Record<string, string>;
  /** Must agree with the snapshot when given. */
  memoryMiB?: number;
  cpus?: number;
  /** A reboot inside the guest restarts it (as startMachine's); default: as the snapshot's source. */
  allowReboot?: boolean;
  accel?: AccelRequest;
  timeoutMs?: number;
  commandTimeoutMs?: number;
  log?: (line: string) => void;
  signal?: AbortSignal;
  runtime?: Runtime;
}

export interface ForkOptions extends Omit<RestoreOptions, 'name'> {
  /** Clone names; default <source>-1, <source>-2, ... */
  names?: string[];
}

export interface ClonePoolOptions extends Omit<RestoreOptions, 'name' | 'signal'> {
  /** How many restored clones to keep ready (default 1). */
  size?: number;
  /** Clone names are <prefix>-1, <prefix>-2, ...; default the snapshot's source machine. */
  prefix?: string;
}

const restoreFields = {
  ...commonMachineFields,
  name: machineName.optional(),
  memoryMiB: wholeNumber(MIN_MEMORY_MIB, 1024 * 1024).optional(),
  cpus: wholeNumber(1, 256).optional(),
  allowReboot: z.boolean({ error: 'must be true or false' }).optional(),
};

const restoreOptions = z.object(restoreFields).strict();

const { name: _name, ...cloneFields } = restoreFields;

const forkOptions = z
  .object({ ...cloneFields, names: z.array(machineName).optional() })
  .strict()
  .refine((options) => !options.names || new Set(options.names).size === options.names.length, {
    error: 'names must be distinct',
    path: ['names'],
  });

const { signal: _signal, ...poolFields } = cloneFields;

const poolOptions = z
  .object({
    ...poolFields,
    size: wholeNumber(1, 64).optional(),
    prefix: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,24}$/, {
        error: "use 1 to 25 of a-z 0-9 '-' '_', starting with a letter or digit",
      })
      .optional(),
  })
  .strict();

export const parseRestoreOptions = (options: unknown): RestoreOptions =>
  parseInput(restoreOptions, options ?? {}, 'restore options') as RestoreOptions;

export const parseForkOptions = (options: unknown): ForkOptions =>
  parseInput(forkOptions, options ?? {}, 'fork options') as ForkOptions;

export const parseClonePoolOptions = (options: unknown): ClonePoolOptions =>
  parseInput(poolOptions, options ?? {}, 'pool options') as ClonePoolOptions;

import { z } from 'zod';
import { commonMachineFields, MIN_MEMORY_MIB } from '../machine/options.js';
import { machineName, parseInput, wholeNumber } from '../util/validate.js';
import type { ForkOptions } from './fork.js';
import type { PoolOptions } from './pool.js';
import type { RestoreOptions } from './restore.js';

/** The options of restore, fork and pool, declared once; errors name the field and the value. */

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

export const parsePoolOptions = (options: unknown): PoolOptions =>
  parseInput(poolOptions, options ?? {}, 'pool options') as PoolOptions;

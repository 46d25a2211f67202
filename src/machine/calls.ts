import { z } from 'zod';
import { parseInput, timeoutMs, waitOptionsOf, wholeNumber } from '../util/validate.js';

const listener = z.custom<(chunk: Buffer) => void>((value) => typeof value === 'function', {
  error: 'must be a function',
});

/** The arguments of Machine's methods, checked before anything is sent to the guest or armed. */
const ARGUMENTS = {
  command: z.string({ error: 'must be a string of shell code' }),
  path: z.string({ error: 'must be a path' }).min(1, { error: 'must not be empty' }),
  hostPath: z.string({ error: 'must be a path' }).min(1, { error: 'must not be empty' }),
  guestPath: z.string({ error: 'must be a path' }).min(1, { error: 'must not be empty' }),
  port: wholeNumber(1, 65_535),
  text: z.string({ error: 'must be a string' }),
  snapshotOptions: z
    .object(
      { stop: z.boolean({ error: 'must be true or false' }).optional(), key: z.unknown().optional() },
      {
        error: 'must be an options object like { stop, key }',
      },
    )
    .strict()
    .optional(),
  options: z
    .object({ timeoutMs: timeoutMs.optional() }, { error: 'must be an options object like { timeoutMs }' })
    .strict()
    .optional(),
  copyOptions: z
    .object(
      {
        timeoutMs: timeoutMs.optional(),
        keepOwnership: z.boolean({ error: 'must be true or false' }).optional(),
      },
      { error: 'must be an options object like { timeoutMs, keepOwnership }' },
    )
    .strict()
    .optional(),
  executeOptions: z
    .object(
      {
        timeoutMs: timeoutMs.optional(),
        onStdout: listener.optional(),
        onStderr: listener.optional(),
        check: z.boolean({ error: 'must be true or false' }).optional(),
      },
      { error: 'must be an options object like { timeoutMs, onStdout, onStderr, check }' },
    )
    .strict()
    .optional(),
  saveOptions: z
    .object({ disk: wholeNumber(0, 63).optional() }, { error: 'must be an options object like { disk }' })
    .strict()
    .optional(),
  waitOptions: waitOptionsOf({}).optional(),
  seconds: z
    .number({ error: 'must be a number of seconds' })
    .refine((n) => Number.isFinite(n) && n >= 0 && n * 1000 <= 2 ** 31 - 1, {
      error: 'must be a number of seconds from 0 to 2147483',
    }),
} as const;

type Argument = keyof typeof ARGUMENTS;

/**
 * Checks a call's arguments; throws a ConfigError naming the method, the argument and the value.
 * Returns the call's options.
 */
export function checkCall(
  method: string,
  args: Partial<Record<Argument, unknown>>,
): { timeoutMs?: number; attemptTimeoutMs?: number } {
  for (const [name, value] of Object.entries(args) as Array<[Argument, unknown]>) {
    const shown = name.endsWith('Options') ? 'options' : name;
    parseInput(ARGUMENTS[name], value, `${method}: ${shown}`);
  }
  return (
    ((args.options ?? args.copyOptions ?? args.executeOptions ?? args.waitOptions) as
      | { timeoutMs?: number; attemptTimeoutMs?: number }
      | undefined) ?? {}
  );
}

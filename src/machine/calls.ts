import { z } from 'zod';
import { parseInput, timeoutMs, wholeNumber } from '../util/validate.js';

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
} as const;

type Argument = keyof typeof ARGUMENTS;

/**
 * Checks a call's arguments; throws a ConfigError naming the method, the argument and the value.
 * Returns the call's options.
 */
export function checkCall(method: string, args: Partial<Record<Argument, unknown>>): { timeoutMs?: number } {
  for (const [name, value] of Object.entries(args) as Array<[Argument, unknown]>) {
    parseInput(ARGUMENTS[name], value, `${method}: ${name === 'snapshotOptions' ? 'options' : name}`);
  }
  return (args.options as { timeoutMs?: number } | undefined) ?? {};
}

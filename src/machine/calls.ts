import { z } from 'zod';
import { parseInput, timeoutMs, wholeNumber } from '../util/validate.js';

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
  executeOptions: z
    .object(
      { timeoutMs: timeoutMs.optional(), onStdout: listener.optional(), onStderr: listener.optional() },
      { error: 'must be an options object like { timeoutMs, onStdout, onStderr }' },
    )
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
    const shown = name === 'snapshotOptions' || name === 'executeOptions' ? 'options' : name;
    parseInput(ARGUMENTS[name], value, `${method}: ${shown}`);
  }
  return ((args.options ?? args.executeOptions) as { timeoutMs?: number } | undefined) ?? {};
}

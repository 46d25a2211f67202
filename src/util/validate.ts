import { isIP } from 'node:net';
import { z } from 'zod';
import { ConfigError, describeValue } from '../errors.js';
import { MAX_TIMER_MS } from './time.js';

/**
 * Declared validation of everything that crosses the public API: one schema per options object,
 * and one ConfigError naming the field path and the value when input is wrong. Checked before
 * anything is started or armed.
 */

/** Parses `value` with `schema`, or throws a ConfigError: "<what>: <field path>: <problem> (got <value>)". */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (!issue) throw new ConfigError(`${what}: invalid`);
  const path = formatPath(issue.path);
  const where = path ? `${path}: ` : '';
  if (issue.code === 'invalid_key') {
    const inner = issue.issues[0]?.message ?? 'invalid';
    throw new ConfigError(`${what}: ${where}invalid key: ${inner}`);
  }
  if (issue.code === 'unrecognized_keys') {
    throw new ConfigError(
      `${what}: ${where}unknown option ${issue.keys.map((key) => JSON.stringify(key)).join(', ')}`,
    );
  }
  const got = valueAt(value, issue.path);
  if (issue.code === 'invalid_type' && issue.expected === 'object') {
    throw new ConfigError(`${what}: ${where}expected an options object (got ${describeValue(got)})`);
  }
  throw new ConfigError(`${what}: ${where}${issue.message} (got ${describeValue(got)})`);
}

/** A field path as code would write it: networks[0].address, hosts["a b"]. */
function formatPath(path: PropertyKey[]): string {
  return path
    .map((key, index) => {
      if (typeof key === 'number') return `[${key}]`;
      const name = String(key);
      if (/^[A-Za-z_$][\w$]*$/.test(name)) return index === 0 ? name : `.${name}`;
      return `[${JSON.stringify(name)}]`;
    })
    .join('');
}

function valueAt(value: unknown, path: PropertyKey[]): unknown {
  let at = value;
  for (const key of path) {
    if (at === null || typeof at !== 'object') return undefined;
    at = (at as Record<PropertyKey, unknown>)[key];
  }
  return at;
}

/** A whole number in [min, max], with a message that says so. */
export const wholeNumber = (min: number, max: number) =>
  z
    .number({ error: `must be a whole number from ${min} to ${max}` })
    .refine((n) => Number.isInteger(n) && n >= min && n <= max, {
      error: `must be a whole number from ${min} to ${max}`,
    });

/** A timeout in milliseconds: a whole number from 1 to the longest a timer can wait. */
export const timeoutMs = wholeNumber(1, MAX_TIMER_MS);

/** The bounds every wait takes: the whole wait, and each attempt within it. */
export const waitFields = { timeoutMs: timeoutMs.optional(), attemptTimeoutMs: timeoutMs.optional() };

/** The one check of a wait's options: each bound valid, and no attempt longer than the wait. */
export function waitOptionsOf<S extends z.ZodRawShape>(
  shape: S,
  error = 'must be an options object like { timeoutMs, attemptTimeoutMs }',
) {
  return z
    .object({ ...waitFields, ...shape }, { error })
    .strict()
    .refine(
      (options) => {
        const { timeoutMs, attemptTimeoutMs } = options as { timeoutMs?: number; attemptTimeoutMs?: number };
        return attemptTimeoutMs === undefined || timeoutMs === undefined || attemptTimeoutMs <= timeoutMs;
      },
      { error: 'attemptTimeoutMs must not be larger than timeoutMs', path: ['attemptTimeoutMs'] },
    );
}

export const MACHINE_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;
export const machineName = z
  .string({ error: 'must be a string' })
  .regex(MACHINE_NAME, "use 1 to 32 lower-case letters, digits, '-' or '_', starting with a letter or digit");

/** An IPv4 address with a prefix length: "10.0.0.2/24". */
export const ipv4Cidr = z.string({ error: 'must be a string like "10.0.0.2/24"' }).refine(
  (text) => {
    const [address, prefix, extra] = text.split('/');
    return (
      extra === undefined &&
      address !== undefined &&
      isIP(address) === 4 &&
      prefix !== undefined &&
      /^\d{1,2}$/.test(prefix) &&
      Number(prefix) <= 32
    );
  },
  { error: 'must be an IPv4 address with a prefix length, like "10.0.0.2/24"' },
);

/** /etc/hosts: names a resolver accepts, mapped to IPv4 or IPv6 addresses. */
export const hostsMap = z.record(
  z.string().regex(/^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$/, {
    error: 'host names are letters, digits, dots and dashes',
  }),
  z.string({ error: 'must be an IP address' }).refine((address) => isIP(address) !== 0, {
    error: 'must be an IPv4 or IPv6 address',
  }),
);

export const callback = z.custom<(...args: never[]) => unknown>((value) => typeof value === 'function', {
  error: 'must be a function',
});

/** A function taking one line of text, for progress and logs. */
export const lineCallback = z.custom<(line: string) => void>((value) => typeof value === 'function', {
  error: 'must be a function taking a line of text',
});

export const abortSignal = z.custom<AbortSignal>((value) => value instanceof AbortSignal, {
  error: 'must be an AbortSignal',
});

/** A value that must be an instance of `type`, named for the error. */
export const instanceOf = <T>(type: { prototype: T }, name: string) =>
  z.custom<T>((value) => value instanceof (type as unknown as abstract new () => T), {
    error: `must be a ${name}`,
  });

import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../../errors.js';
import { parseInput, wholeNumber } from '../../util/validate.js';
import type { MockScriptOptions, MockStep } from './script.js';

const reply = {
  stdout: z.string().optional(),
  stderr: z.string().optional(),
  status: wholeNumber(0, 255).optional(),
  timedOut: z.boolean().optional(),
  delayMs: wholeNumber(0, 600_000).optional(),
};

const stepFields = {
  ...reply,
  unit: z.string().min(1).optional(),
  state: z
    .string()
    .regex(/^[a-z-]{1,32}$/, { error: 'is not a unit state like "active" or "failed"' })
    .optional(),
  port: wholeNumber(1, 65_535).optional(),
  open: z.boolean().optional(),
  times: wholeNumber(1, 1_000_000).optional(),
  always: z.boolean().optional(),
  machine: z.string().min(1).optional(),
  powerOff: z.boolean().optional(),
};

/** Exactly one of command, unit, port; state only with unit, open only with port. */
function oneKind(step: {
  command?: unknown;
  unit?: unknown;
  port?: unknown;
  state?: unknown;
  open?: unknown;
}) {
  const kinds = [step.command, step.unit, step.port].filter((value) => value !== undefined).length;
  return (
    kinds === 1 &&
    (step.state === undefined || step.unit !== undefined) &&
    (step.open === undefined || step.port !== undefined)
  );
}
const KIND_ERROR = {
  error: 'a step names exactly one of command, unit or port (state goes with unit, open with port)',
};

const step = z
  .object({ ...stepFields, command: z.union([z.string(), z.instanceof(RegExp)]).optional() })
  .strict()
  .refine(oneKind, KIND_ERROR);

const common = {
  ordered: z.boolean().optional(),
  otherwise: z.object(reply).strict().optional(),
  console: z.string().optional(),
};

const mockOptions = z.object({ script: z.array(step).optional(), ...common }).strict();

/** In a file a pattern is `match` (a regular expression's source), a literal command `command`. */
const fileStep = z
  .object({ ...stepFields, command: z.string().optional(), match: z.string().optional() })
  .strict()
  .refine((value) => !(value.command !== undefined && value.match !== undefined), {
    error: 'a step has command or match, not both',
  })
  .transform(({ match, ...rest }, context) => {
    if (match === undefined) return rest;
    try {
      return { ...rest, command: new RegExp(match) };
    } catch (error) {
      context.addIssue({ code: 'custom', message: `match: ${(error as Error).message}` });
      return z.NEVER;
    }
  })
  .refine(oneKind, KIND_ERROR);

const fileOptions = z.object({ script: z.array(fileStep).optional(), ...common }).strict();

/** Checks the options of mockBackend(), naming the field and value that are wrong. */
export function parseMockOptions(options: unknown): MockScriptOptions {
  return parseInput(mockOptions, options, 'mockBackend options') as MockScriptOptions;
}

/**
 * Reads a mock script from a JSON or YAML file: a list of steps, or `{ script, ordered,
 * otherwise, console }`. A step's `match` is a regular expression; `command` matches exactly.
 */
export async function loadMockScript(path: string): Promise<MockScriptOptions> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new ConfigError(
      `cannot read mock script ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
  let value: unknown;
  try {
    value = /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new ConfigError(`mock script ${path}: ${(error as Error).message.split('\n')[0]}`);
  }
  const shaped = Array.isArray(value) ? { script: value } : value;
  const parsed = parseInput(fileOptions, shaped, `mock script ${path}`);
  return parsed as { script?: MockStep[] } & MockScriptOptions;
}

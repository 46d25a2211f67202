import { join } from 'node:path';
import { z } from 'zod';
import type { ConsoleStep } from '../console/script.js';
import { ConfigError } from '../errors.js';
import { readInputFile } from '../util/files.js';
import { timeoutMs } from '../util/validate.js';

/**
 * The media forms of a project VM's `image`: a disk image it boots (through a copy-on-write
 * overlay, the file is never written), or an ISO it installs from onto an empty disk by a
 * console script, the installed disk then being the VM's base.
 */
const file = z.string({ error: 'must be a file path' }).min(1, { error: 'must be a file path' });
const pattern = z.union(
  [
    z.string(),
    z.instanceof(RegExp),
    z
      .object({
        regex: z.string(),
        flags: z
          .string()
          .regex(/^[imsu]*$/)
          .optional(),
      })
      .strict(),
  ],
  { error: 'must be text, a RegExp or { regex, flags? }' },
);
const timeout = timeoutMs;

const stepSchema = z
  .object({
    name: z.string({ error: 'must name the step' }).min(1),
    phase: z.string().optional(),
    expect: pattern.optional(),
    send: z.string().optional(),
    sendLine: z.string().optional(),
    keys: z.array(z.string()).optional(),
    settleMs: timeout.optional(),
    perCharMs: timeout.optional(),
    until: pattern.optional(),
    untilMs: timeout.optional(),
    timeoutMs: timeout.optional(),
  })
  .strict()
  .refine(
    (step) =>
      step.expect !== undefined ||
      step.send !== undefined ||
      step.sendLine !== undefined ||
      (step.keys?.length ?? 0) > 0,
    { error: 'the step neither expects nor sends anything' },
  );
const stepsSchema = z.array(stepSchema).min(1, { error: 'must list at least one step' });

/** The OS in the media runs vmkit's agent and is set up like this image; left out: no agent. */
const agent = z.enum(['tiny', 'debian'], { error: 'must be "tiny" or "debian" (left out: no agent)' });
const common = {
  firmware: z.enum(['bios', 'uefi'], { error: 'must be bios or uefi' }).default('bios'),
  agent: agent.optional(),
  /** Without an agent: console text that shows the guest is up (left out: up returns once QEMU runs). */
  readyWhen: pattern.optional(),
};

const diskImageSchema = z.object({ disk: file, ...common }).strict();
const isoImageSchema = z
  .object({
    iso: file,
    /** Console steps that run the installer, or a JSON file (in the project) holding them. */
    install: z.union([stepsSchema, file.regex(/\.json$/, { error: 'must be a .json file of steps' })], {
      error: 'must be a list of console steps or a .json file holding them',
    }),
    /** The size of the empty disk the installer installs onto. */
    diskMiB: z.number({ error: 'must be MiB' }).int().min(16).max(1_048_576).default(4096),
    /** How long the installer may take, from boot to powering off. */
    installTimeoutMs: timeout.default(1_800_000),
    ...common,
  })
  .strict();

export type DiskImageConfig = z.output<typeof diskImageSchema>;
export type IsoImageConfig = z.output<typeof isoImageSchema>;
export type MediaImageConfig = DiskImageConfig | IsoImageConfig;
type Pattern = z.output<typeof pattern>;

const named = z.union([
  z.enum(['tiny', 'debian'], {
    error: 'must be "tiny", "debian", a recipe file (.json), { disk } or { iso, install }',
  }),
  z.string().regex(/\.json$/, {
    error: 'must be "tiny", "debian", a recipe file (.json), { disk } or { iso, install }',
  }),
]);

/**
 * A VM's image: a name, a recipe file, `{ disk }` or `{ iso, install }`. The form is picked by
 * the value's shape, so that an error names the field at fault rather than every form it is not.
 */
export const projectImageSchema = z.unknown().transform((value, context) => {
  const object = typeof value === 'object' && value !== null && !(value instanceof RegExp);
  const schema = !object ? named : 'iso' in value ? isoImageSchema : diskImageSchema;
  const result = (schema as z.ZodType<string | MediaImageConfig>).safeParse(value);
  if (result.success) return result.data;
  for (const issue of result.error.issues) context.addIssue({ ...issue, input: undefined } as never);
  return z.NEVER;
});

export const isMediaImage = (image: string | MediaImageConfig): image is MediaImageConfig =>
  typeof image === 'object';
export const isIsoImage = (image: string | MediaImageConfig): image is IsoImageConfig =>
  typeof image === 'object' && 'iso' in image;

/** Whether commands reach the guest through vmkit's agent (built images always run it). */
export const hasAgent = (image: string | MediaImageConfig): boolean =>
  !isMediaImage(image) || image.agent !== undefined;

export function toPattern(value: Pattern): RegExp | string {
  if (typeof value === 'string' || value instanceof RegExp) return value;
  return new RegExp(value.regex, value.flags);
}

/** The install steps as the console script runs them, read from their file when they are in one. */
export function installSteps(image: IsoImageConfig, root: string, field: string): ConsoleStep[] {
  let steps: unknown = image.install;
  if (typeof steps === 'string') {
    const path = join(root, steps);
    const text = readInputFile(path, `${field}.install: steps file`);
    try {
      steps = JSON.parse(text);
    } catch (error) {
      throw new ConfigError(
        `${field}.install: the steps in ${path} are not JSON: ${(error as Error).message}`,
      );
    }
    const parsed = stepsSchema.safeParse(steps);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ConfigError(
        `${field}.install: ${path}: ${issue?.path.join('.') || '(top level)'}: ${issue?.message}`,
      );
    }
    steps = parsed.data;
  }
  const list = steps as z.output<typeof stepsSchema>;
  return list.map((step) => ({
    ...step,
    expect: step.expect === undefined ? undefined : toPattern(step.expect),
    until: step.until === undefined ? undefined : toPattern(step.until),
  }));
}

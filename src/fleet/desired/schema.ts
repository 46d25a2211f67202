import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../../errors.js';
import { readInputFile } from '../../util/files.js';
import { parseInput, wholeNumber } from '../../util/validate.js';
import { poolImageSchema } from '../images/image-spec.js';
import { policyThresholds } from '../policy/policy.js';
import { fleetId } from '../state/ids.js';
import { overlaps, parseTenantSubnet, type Subnet } from '../state/subnet.js';

/** The document versions this vmkit reads. */
export const DESIRED_VERSION = 1;

const secretName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, {
  error: 'must be a variable-like name (letters, digits, underscores)',
});

/** Where a secret's value comes from: the agent's environment or a file; never the document itself. */
const secretRef = z.union(
  [z.object({ env: secretName }).strict(), z.object({ file: z.string().min(1) }).strict()],
  { error: 'must be { env: "NAME" } or { file: "/path" }' },
);

const quotas = z
  .object({
    maxVcpus: wholeNumber(1, 4096),
    maxMemoryMiB: wholeNumber(16, 16 * 1024 * 1024),
    maxRunning: wholeNumber(0, 10_000),
    maxWarm: wholeNumber(0, 10_000),
    maxInstances: wholeNumber(0, 10_000),
    maxDiskMiB: wholeNumber(0, 1024 * 1024 * 1024),
  })
  .partial()
  .strict();

const counts = z
  .object({
    running: wholeNumber(0, 1000).default(0),
    warm: wholeNumber(0, 1000).default(0),
    sleeping: wholeNumber(0, 1000).default(0),
  })
  .strict();

const pool = z
  .object({
    tenant: fleetId,
    id: fleetId,
    /** An image name, or a recipe (src/images/recipe.ts) built through the fleet's builder. */
    image: poolImageSchema.default('tiny'),
    vcpus: wholeNumber(1, 64).default(1),
    memoryMiB: wholeNumber(64, 65_536).default(128),
    dataDiskMiB: wholeNumber(1, 1024 * 1024).default(16),
    desired: counts.default({ running: 0, warm: 0, sleeping: 0 }),
    /** Refuse to run its instances where their resource limits cannot all be applied. */
    requireLimits: z.boolean().default(false),
  })
  .strict();

const tenant = z
  .object({
    id: fleetId,
    subnet: z.string({ error: 'must be a CIDR like 10.20.0.0/24' }),
    quotas: quotas.default({}),
    secrets: z.record(secretName, secretRef).default({}),
  })
  .strict();

export const desiredDocument = z
  .object({
    version: z.literal(DESIRED_VERSION, { error: `must be ${DESIRED_VERSION}` }),
    tenants: z.array(tenant).default([]),
    pools: z.array(pool).default([]),
    /** The sleep policy's thresholds; without it, reconcile runs no policy. */
    sleepPolicy: policyThresholds.optional(),
  })
  .strict()
  .superRefine((doc, ctx) => {
    const issue = (path: PropertyKey[], message: string) => ctx.addIssue({ code: 'custom', path, message });
    const tenants = new Set<string>();
    const subnets: Array<{ id: string; subnet: Subnet }> = [];
    doc.tenants.forEach((t, n) => {
      if (tenants.has(t.id)) issue(['tenants', n, 'id'], `duplicate tenant ${t.id}`);
      tenants.add(t.id);
      try {
        const subnet = parseTenantSubnet(t.subnet);
        const other = subnets.find((s) => overlaps(s.subnet, subnet));
        if (other)
          issue(
            ['tenants', n, 'subnet'],
            `${subnet.cidr} overlaps tenant ${other.id}'s ${other.subnet.cidr}`,
          );
        subnets.push({ id: t.id, subnet });
      } catch (error) {
        issue(['tenants', n, 'subnet'], (error as Error).message);
      }
    });
    const pools = new Set<string>();
    doc.pools.forEach((p, n) => {
      if (!tenants.has(p.tenant)) issue(['pools', n, 'tenant'], `tenant ${p.tenant} is not in the document`);
      if (pools.has(`${p.tenant}/${p.id}`)) issue(['pools', n, 'id'], `duplicate pool ${p.tenant}/${p.id}`);
      pools.add(`${p.tenant}/${p.id}`);
    });
  });

export type DesiredDocument = z.output<typeof desiredDocument>;
export type DesiredTenant = DesiredDocument['tenants'][number];
export type DesiredPool = DesiredDocument['pools'][number];

/** Parses a document's text (JSON, or YAML when `format` says so or the text is not JSON). */
export function parseDesired(
  text: string,
  source = 'desired state',
  format?: 'json' | 'yaml',
): DesiredDocument {
  let value: unknown;
  const looksJson = format === 'json' || (format === undefined && /^\s*[[{]/.test(text));
  try {
    value = format === 'yaml' ? parseYaml(text) : JSON.parse(text);
  } catch (error) {
    if (looksJson) throw new ConfigError(`${source}: not valid JSON: ${(error as Error).message}`);
    try {
      value = parseYaml(text);
    } catch (yamlError) {
      throw new ConfigError(
        `${source}: neither JSON nor YAML: ${(yamlError as Error).message.split('\n')[0]}`,
      );
    }
  }
  return parseInput(desiredDocument, value, source);
}

/** Reads and validates a desired-state file (.json, .yaml or .yml). */
export function loadDesired(file: string): DesiredDocument {
  const text = readInputFile(file, 'desired state');
  const format = /\.ya?ml$/i.test(file) ? 'yaml' : /\.json$/i.test(file) ? 'json' : undefined;
  return parseDesired(text, file, format);
}

/** Reads each secret's value from where the document points; a missing one is a ConfigError. */
export function resolveSecrets(tenant: DesiredTenant): Record<string, string> {
  const values: Record<string, string> = {};
  for (const [name, ref] of Object.entries(tenant.secrets)) {
    const where = `tenant ${tenant.id} secret ${name}`;
    if ('env' in ref) {
      const value = process.env[ref.env];
      if (value === undefined) throw new ConfigError(`${where}: environment variable ${ref.env} is not set`);
      values[name] = value;
    } else {
      values[name] = readInputFile(ref.file, where, 1024 * 1024).replace(/\n$/, '');
    }
  }
  return values;
}

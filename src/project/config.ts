import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, posix, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { ConfigError, describeValue } from '../errors.js';
import { timeoutMs } from '../util/validate.js';
import { hasAgent, projectImageSchema } from './media-config.js';

/** The config file names, in the order they are looked for in each folder. */
export const CONFIG_FILES = ['vmkit.config.ts', 'vmkit.config.json'] as const;

const NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const guestPath = z
  .string({ error: 'must be an absolute guest path' })
  .refine((path) => path.startsWith('/') && !path.split('/').includes('..') && !/[\s'"\\]/.test(path), {
    error: 'must be an absolute guest path without "..", spaces or quotes',
  });
const port = z.number({ error: 'must be a port number' }).int().min(1).max(65_535);

const commandSchema = z.union([
  z.string({ error: 'must be a shell command' }).min(1),
  z
    .object({
      run: z.string({ error: 'must be a shell command' }).min(1),
      cwd: guestPath.optional(),
      timeoutMs: timeoutMs.optional(),
    })
    .strict(),
]);

const syncSchema = z
  .object({
    host: z.string({ error: 'must be a path inside the project' }).default('.'),
    guest: guestPath,
    exclude: z.array(z.string({ error: 'must be a glob pattern' })).default([]),
    /** Also leave out what .gitignore lists (via git, when the project is a git repository). */
    gitignore: z.boolean().default(true),
  })
  .strict();

const vmSchema = z
  .object({
    image: projectImageSchema.default('tiny'),
    memoryMiB: z.number({ error: 'must be MiB' }).int().min(64).max(65_536).default(256),
    cpus: z.number({ error: 'must be a count' }).int().min(1).max(64).default(1),
    /** The persistent data disk, mounted at /work in the guest. */
    diskMiB: z.number({ error: 'must be MiB' }).int().min(16).max(1_048_576).default(1024),
    ports: z.array(z.object({ guest: port, host: port.optional() }).strict()).default([]),
    /** The guest's sshd port (default 22), forwarded for `vmkit ssh` and rsync. */
    sshPort: port.optional(),
    /** How `vmkit sync` copies: vmkit's own transfer, rsync over SSH, or rsync where both sides have it. */
    syncMethod: z
      .enum(['vmkit', 'rsync', 'auto'], { error: 'must be "vmkit", "rsync" or "auto"' })
      .default('vmkit'),
    sync: z.array(syncSchema).optional(),
    workdir: guestPath.optional(),
    commands: z.record(z.string().regex(NAME, { error: 'is not a command name' }), commandSchema).default({}),
    defaultCommand: z.string().optional(),
    provision: z.array(z.string({ error: 'must be a shell command' })).default([]),
  })
  .strict();

const configSchema = z
  .object({
    vms: z
      .record(
        z.string().regex(NAME, {
          error: "VM names are 1 to 32 lower-case letters, digits, '-' or '_'",
        }),
        vmSchema,
      )
      .refine((vms) => Object.keys(vms).length > 0, { error: 'must name at least one VM' }),
    default: z.string().optional(),
  })
  .strict();

export type CommandSpec = { run: string; cwd?: string; timeoutMs?: number };
export interface SyncMap {
  /** Absolute host folder inside the project. */
  host: string;
  guest: string;
  exclude: string[];
  gitignore: boolean;
}
export interface VmConfig extends Omit<z.output<typeof vmSchema>, 'sync' | 'commands' | 'workdir'> {
  name: string;
  sync: SyncMap[];
  workdir: string;
  commands: Record<string, CommandSpec>;
}
export interface ProjectConfig {
  /** The project's root: the folder holding the config file. */
  root: string;
  file: string;
  vms: Record<string, VmConfig>;
  defaultVm: string;
}

export const DEFAULT_GUEST_DIR = '/work/project';

/** Guest folders a sync must not mirror into: the root, the system's own, the data disk's mount. */
const SYSTEM_DIRS = [
  'bin',
  'boot',
  'dev',
  'etc',
  'lib',
  'lib32',
  'lib64',
  'proc',
  'run',
  'sbin',
  'sys',
  'usr',
  'var',
];
const systemPath = (guest: string) =>
  guest === '/' ||
  guest === '/work' ||
  SYSTEM_DIRS.includes(guest.slice(1)) ||
  /^\/(dev|proc|sys)\//.test(guest);

/** Finds the config file in `start` or the nearest folder above it. */
export function findConfigFile(start: string): string | undefined {
  for (let dir = resolve(start); ; dir = dirname(dir)) {
    for (const name of CONFIG_FILES) {
      const file = join(dir, name);
      if (existsSync(file)) return file;
    }
    if (dirname(dir) === dir) return undefined;
  }
}

/** The config problems, one line each, with the field path: `vms.dev.memoryMiB: ...`. */
export function configErrors(issues: z.core.$ZodIssue[], value: unknown): string[] {
  return issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    let got: unknown = value;
    for (const key of issue.path) got = (got as Record<PropertyKey, unknown> | undefined)?.[key];
    let detail = `${issue.message}${got === undefined ? '' : ` (got ${describeValue(got)})`}`;
    if (issue.code === 'unrecognized_keys') {
      detail = `unknown field ${issue.keys.map((key) => JSON.stringify(key)).join(', ')}`;
    } else if (issue.code === 'invalid_key') {
      detail = `bad name: ${issue.issues[0]?.message ?? 'invalid'}`;
    }
    return `${path || '(top level)'}: ${detail}`;
  });
}

/** Validates a loaded config object; throws a ConfigError with one line per problem. */
export function parseConfig(value: unknown, file: string): ProjectConfig {
  const result = configSchema.safeParse(value);
  const root = dirname(file);
  if (!result.success) {
    throw new ConfigError(`invalid config ${file}:\n${configErrors(result.error.issues, value).join('\n')}`);
  }
  const problems: string[] = [];
  const vms: Record<string, VmConfig> = {};
  for (const [name, raw] of Object.entries(result.data.vms)) {
    const sync = (raw.sync ?? [{ host: '.', guest: DEFAULT_GUEST_DIR, exclude: [], gitignore: true }]).map(
      (map, index) => {
        const host = resolve(root, map.host);
        const inside = relative(root, host);
        if (inside.startsWith('..') || isAbsolute(inside)) {
          problems.push(`vms.${name}.sync.${index}.host: ${map.host} is outside the project ${root}`);
        }
        const guest = posix.normalize(map.guest).replace(/(.)\/$/, '$1');
        if (systemPath(guest)) {
          problems.push(
            `vms.${name}.sync.${index}.guest: ${guest} is the guest's root, a system folder or the data disk's mount point; sync into a folder of its own, like ${DEFAULT_GUEST_DIR}`,
          );
        }
        return { ...map, host, guest };
      },
    );
    const seen = { guest: new Set<number>(), host: new Set<number>() };
    raw.ports.forEach((forward, index) => {
      for (const side of ['guest', 'host'] as const) {
        const value = forward[side];
        if (value === undefined) continue;
        if (seen[side].has(value))
          problems.push(`vms.${name}.ports.${index}.${side}: port ${value} is forwarded twice`);
        seen[side].add(value);
      }
    });
    const commands: Record<string, CommandSpec> = {};
    for (const [command, spec] of Object.entries(raw.commands)) {
      commands[command] = typeof spec === 'string' ? { run: spec } : spec;
    }
    if (raw.defaultCommand !== undefined && !commands[raw.defaultCommand]) {
      problems.push(`vms.${name}.defaultCommand: no command named ${JSON.stringify(raw.defaultCommand)}`);
    }
    if (!hasAgent(raw.image) && raw.provision.length > 0) {
      problems.push(`vms.${name}.provision: needs vmkit's agent in the guest (set image.agent)`);
    }
    const workdir = raw.workdir ?? sync[0]?.guest ?? DEFAULT_GUEST_DIR;
    vms[name] = { ...raw, name, sync, commands, workdir };
  }
  const defaultVm = result.data.default ?? Object.keys(vms)[0] ?? '';
  if (!vms[defaultVm]) problems.push(`default: no VM named ${JSON.stringify(defaultVm)}`);
  if (problems.length > 0) throw new ConfigError(`invalid config ${file}:\n${problems.join('\n')}`);
  return { root, file, vms, defaultVm };
}

/** Reads a config file: JSON, or TypeScript whose default export is the config (loaded with tsx). */
export async function readConfigFile(file: string): Promise<unknown> {
  if (file.endsWith('.json')) {
    const text = await readFile(file, 'utf8');
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new ConfigError(`invalid config ${file}: not JSON: ${(error as Error).message}`);
    }
  }
  const { tsImport } = await import('tsx/esm/api');
  try {
    const module = (await tsImport(pathToFileURL(file).href, import.meta.url)) as { default?: unknown };
    // A .ts file outside an ESM package loads as CommonJS: its default export sits one level down.
    const value = module.default as { default?: unknown; vms?: unknown } | undefined;
    return value && value.vms === undefined && value.default !== undefined ? value.default : value;
  } catch (error) {
    throw new ConfigError(`invalid config ${file}: it does not load: ${(error as Error).message}`);
  }
}

/** The project config for the current folder (or `start`), found by walking up. */
export async function loadProjectConfig(start = process.cwd()): Promise<ProjectConfig> {
  const file = findConfigFile(start);
  if (!file) {
    throw new ConfigError(
      `no ${CONFIG_FILES.join(' or ')} in ${resolve(start)} or any folder above it (vmkit init writes one)`,
    );
  }
  return parseConfig(await readConfigFile(file), file);
}

/** The VM a command names, or the default one. */
export function selectVm(config: ProjectConfig, name: string | undefined): VmConfig {
  const vm = config.vms[name ?? config.defaultVm];
  if (!vm) {
    throw new ConfigError(
      `unknown VM ${JSON.stringify(name)} in ${config.file} (it has: ${Object.keys(config.vms).join(', ')})`,
    );
  }
  return vm;
}

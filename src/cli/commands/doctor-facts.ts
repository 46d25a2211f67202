import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { delimiter, dirname, join } from 'node:path';
import { currentUser } from '../../backends/accel-host.js';
import {
  readSubidFacts as readSubidFactsWith,
  readUsernsFacts as readUsernsFactsWith,
} from '../../images/rootless-checks.js';
import { which } from '../../util/which.js';
import { type CgroupFacts, type CgroupGroup, NEEDED_CONTROLLERS } from './doctor-cgroups.js';
import type { SubidFacts, ToolFound, UsernsFacts, Who } from './doctor-checks.js';

/** The thin layer under doctor-checks.ts: reads this machine into facts. */

/** Finds a tool; the default looks on PATH, then in the sbin folders an ordinary user's PATH lacks. */
export type ToolLookup = (name: string) => Promise<ToolFound>;

export const defaultLookup: ToolLookup = async (name) => {
  const path = await which(name);
  if (!path) return { onPath: false };
  const onPath = (process.env.PATH ?? '').split(delimiter).includes(dirname(path));
  return { path, onPath };
};

export function who(): Who {
  return { user: currentUser(), uid: process.getuid?.() ?? -1 };
}

const readText = (path: string) => readFile(path, 'utf8').catch(() => undefined);
const writable = (path: string) =>
  access(path, constants.W_OK).then(
    () => true,
    () => false,
  );

/** The image layer's readers, through doctor's tool lookup. */
export const readUsernsFacts = (lookup: ToolLookup = defaultLookup): Promise<UsernsFacts> =>
  readUsernsFactsWith(async (name) => (await lookup(name)).path);

export const readSubidFacts = (lookup: ToolLookup = defaultLookup): Promise<SubidFacts> =>
  readSubidFactsWith(who(), async (name) => (await lookup(name)).path);

/** /proc/self/cgroup as hierarchy key ('' for v2, else the controllers, comma-joined) to path. */
export function parseProcCgroup(text: string): Map<string, string> {
  const groups = new Map<string, string>();
  for (const line of text.trim().split('\n')) {
    const match = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!match) continue;
    for (const key of (match[1] as string).split(',')) groups.set(key, match[2] as string);
  }
  return groups;
}

const ROOT = '/sys/fs/cgroup';

async function v2Group(path: string): Promise<CgroupGroup | undefined> {
  const dir = join(ROOT, path);
  const controllers = await readText(join(dir, 'cgroup.controllers'));
  if (controllers === undefined) return undefined;
  return {
    path,
    controllers: controllers.trim().split(/\s+/).filter(Boolean),
    writable: await writable(dir),
  };
}

export async function readCgroupFacts(): Promise<CgroupFacts> {
  const base = who();
  const own = parseProcCgroup((await readText('/proc/self/cgroup')) ?? '');
  const isDir = (path: string) =>
    stat(path).then(
      (s) => s.isDirectory(),
      () => false,
    );
  if ((await readText(join(ROOT, 'cgroup.controllers'))) !== undefined) {
    const facts: CgroupFacts = { ...base, version: 'v2' };
    const ownGroup = await v2Group(own.get('') ?? '/');
    const service = await v2Group(`/user.slice/user-${base.uid}.slice/user@${base.uid}.service`);
    if (ownGroup) facts.own = ownGroup;
    if (service) facts.userService = service;
    return facts;
  }
  if (!(await isDir(join(ROOT, 'memory')))) return { ...base, version: 'none' };
  const v1Writable: CgroupFacts['v1Writable'] = {};
  for (const controller of NEEDED_CONTROLLERS) {
    v1Writable[controller] = await writable(join(ROOT, controller, own.get(controller) ?? '/'));
  }
  return { ...base, version: 'v1', v1Writable };
}

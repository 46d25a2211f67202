import { posix } from 'node:path';

/**
 * Where VMM cgroups go on a cgroup v2 host, decided from facts gathered beforehand (no file
 * access here, so every case is a unit test). The kernel's rules that shape it:
 * - a group with processes in it cannot enable controllers for its children (EBUSY: "no internal
 *   processes"; only the real root is exempt), so vmkit's own process must sit in a leaf;
 * - moving a process needs write access to the common ancestor of its old and new group, so an
 *   ordinary user can only place VMMs inside the subtree systemd delegated to it (user@UID.service,
 *   or a unit with Delegate=yes), never beside its login session's scope, which root owns.
 */
export const CONTROLLERS = ['memory', 'cpu', 'pids'] as const;
export type Controller = (typeof CONTROLLERS)[number];

/** The leaf vmkit moves its own process into, so that its group may enable controllers. */
export const SUPERVISOR_LEAF = 'vmkit-supervisor';
/** The group made beside everything else, at the top of the writable subtree, when vmkit's own cannot hold VMMs. */
export const SHARED_GROUP = 'vmkit';

/** One group on the way from vmkit's own group up to the root, as seen by this process. */
export interface GroupFacts {
  /** Path inside the hierarchy: '/', '/user.slice/user-1000.slice/session-3.scope', ... */
  path: string;
  /** Whether this process may create groups in it and move processes through it (cgroup.procs and the folder writable). */
  writable: boolean;
  /** The pids in its cgroup.procs. */
  procs: number[];
  /** cgroup.controllers: what its children can be given. */
  controllers: string[];
  /** cgroup.subtree_control: what its children are given already. */
  subtree: string[];
}

export interface V2Facts {
  /** vmkit's own group first, then each ancestor up to '/'. */
  chain: GroupFacts[];
  /** The pids vmkit may move with itself: its own and those of processes it started. */
  ours: number[];
  uid: number;
}

export interface V2Plan {
  /** The group under which each VMM gets a leaf of its own. */
  base: string;
  /** vmkit's processes to move into `<base>/vmkit-supervisor` first, so that base holds none. */
  move: number[];
  /** Groups whose cgroup.subtree_control must enable the controllers, top first (base last). */
  enable: string[];
  /** Controllers there is no way to apply here. */
  missing: Controller[];
  /** Why base was chosen, for `fleet node info`. */
  why: string;
  warnings: string[];
}

const DELEGATE_HINT = (uid: number) =>
  uid === 0
    ? 'run vmkit in a unit with Delegate=yes (systemd-run --scope -p Delegate=yes ...)'
    : 'run vmkit inside the subtree systemd delegates to you (systemd-run --user --scope -p Delegate=yes ...)';

/** A plan in which no limit can be applied, with the one warning that says why. */
function nothing(why: string): V2Plan {
  return { base: '', move: [], enable: [], missing: [...CONTROLLERS], why, warnings: [why] };
}

/** The controllers of `wanted` that `available` lacks, and one warning naming them. */
function lacking(available: string[], where: string, why: string): Pick<V2Plan, 'missing' | 'warnings'> {
  const missing = CONTROLLERS.filter((c) => !available.includes(c));
  return {
    missing,
    warnings: missing.map(
      (c) => `${c} limit not applied: cgroup v2 controller ${c} is not available in ${where} (${why})`,
    ),
  };
}

/** Decides where VMM groups go and what must be done first; see the module's comment. */
export function planV2(facts: V2Facts): V2Plan {
  const [own, parent] = facts.chain;
  if (!own) return nothing('cgroup v2: vmkit found no group of its own in /proc/self/cgroup');
  // Moved into the supervisor leaf by an earlier call (or started there): its parent is the base.
  if (posix.basename(own.path) === SUPERVISOR_LEAF && parent?.writable) {
    return {
      base: parent.path,
      move: [],
      enable: [parent.path],
      ...lacking(parent.controllers, parent.path, 'not enabled by its parent'),
      why: `under vmkit's own group ${parent.path}; vmkit runs in its leaf ${own.path}`,
    };
  }
  const ours = new Set(facts.ours);
  if (own.writable && own.procs.every((pid) => ours.has(pid))) {
    return {
      base: own.path,
      move: own.procs,
      enable: [own.path],
      ...lacking(own.controllers, own.path, 'not enabled by its parent'),
      why: `under vmkit's own group ${own.path}, vmkit moving into its leaf ${SUPERVISOR_LEAF}`,
    };
  }
  // The top of the subtree this process may write: all of it as root, the delegated part as a user.
  let top: GroupFacts | undefined;
  for (const group of facts.chain) if (group.writable) top = group;
  if (!top) {
    return nothing(
      `cgroup v2: no limits applied: vmkit's group ${own.path} holds other processes and no group above it is delegated to uid ${facts.uid}; ${DELEGATE_HINT(facts.uid)}`,
    );
  }
  if (top.path !== '/' && top.procs.length > 0) {
    return nothing(
      `cgroup v2: no limits applied: ${top.path}, the top group delegated to uid ${facts.uid}, holds processes, so it cannot give its children controllers; ${DELEGATE_HINT(facts.uid)}`,
    );
  }
  const base = posix.join(top.path, SHARED_GROUP);
  const others = own.procs.filter((pid) => !ours.has(pid)).length;
  return {
    base,
    move: [],
    enable: [top.path, base],
    ...lacking(top.controllers, top.path, 'not enabled by its parent'),
    why: `under ${base}: vmkit's group ${own.path} ${own.writable ? `holds ${others} other process${others === 1 ? '' : 'es'}` : 'is not writable'}${top.path === '/' ? "; limits on vmkit's own group do not cover its VMMs" : ''}`,
  };
}

/** vmkit's group in each hierarchy from /proc/self/cgroup: v1 controller name (or '' for v2) to path. */
export function parseProcCgroup(text: string): Map<string, string> {
  const groups = new Map<string, string>();
  for (const line of text.trim().split('\n')) {
    const match = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!match) continue;
    const [, controllers = '', path = '/'] = match;
    if (controllers === '') groups.set('', path);
    for (const controller of controllers.split(',').filter(Boolean)) groups.set(controller, path);
  }
  return groups;
}

/** A group and its ancestors up to '/', itself first. */
export function ancestry(path: string): string[] {
  const chain: string[] = [];
  for (let at = posix.normalize(path); ; at = posix.dirname(at)) {
    chain.push(at);
    if (at === '/') return chain;
  }
}

const PERIOD_US = 100_000;

/** The v2 files each controller's limit is written to. */
export function v2Files(
  controller: Controller,
  limits: { memoryMiB: number; cpus: number; pids: number },
): Record<string, string> {
  if (controller === 'memory') return { 'memory.max': String(limits.memoryMiB * 2 ** 20) };
  if (controller === 'cpu') return { 'cpu.max': `${Math.round(limits.cpus * PERIOD_US)} ${PERIOD_US}` };
  return { 'pids.max': String(limits.pids) };
}

/** The v1 files each controller's limit is written to (a hierarchy per controller). */
export function v1Files(
  controller: Controller,
  limits: { memoryMiB: number; cpus: number; pids: number },
): Record<string, string> {
  if (controller === 'memory') return { 'memory.limit_in_bytes': String(limits.memoryMiB * 2 ** 20) };
  if (controller === 'cpu')
    return {
      'cpu.cfs_period_us': String(PERIOD_US),
      'cpu.cfs_quota_us': String(Math.round(limits.cpus * PERIOD_US)),
    };
  return { 'pids.max': String(limits.pids) };
}

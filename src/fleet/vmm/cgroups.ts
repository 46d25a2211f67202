import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readFileSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { basename, join, normalize } from 'node:path';
import {
  ancestry,
  CONTROLLERS,
  type Controller,
  type GroupFacts,
  parseProcCgroup,
  planV2,
  SUPERVISOR_LEAF,
  type V2Facts,
  v1Files,
  v2Files,
} from './cgroup-plan.js';

/**
 * Resource limits for one VMM with cgroups: memory, CPU and pids, on cgroup v2 (one unified
 * hierarchy: where the groups go is decided in cgroup-plan.ts) or v1 (a hierarchy per
 * controller; each VMM's group is made under vmkit's own there). The file work is here, against
 * a cgroup root given as a parameter, so that tests run it on a fake tree and a guest on a real
 * v2 one. What cannot be applied is returned as warnings, never skipped silently.
 */
export interface Limits {
  memoryMiB: number;
  cpus: number;
  pids: number;
}

export interface Placement {
  /** The group folders the VMM was put in. */
  groups: string[];
  warnings: string[];
}

/** The process whose groups decide where VMM groups go, and the tree they are in. */
export interface CgroupHost {
  /** Where the hierarchies are mounted: /sys/fs/cgroup, or a fake tree in a test. */
  root: string;
  /** The process's /proc/<pid>/cgroup. */
  procCgroup: () => string;
  uid: number;
  /** Of the pids in vmkit's group, those that are vmkit's: its own and its descendants'. */
  ours: (pids: number[]) => number[];
}

const parentOf = (pid: number): number | undefined => {
  try {
    // The command name may hold spaces and parentheses: the fields after its last ')' are fixed.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
};

/** Whether `pid` is `ancestor` or was started by it (directly or not). */
function descends(pid: number, ancestor: number): boolean {
  for (let at: number | undefined = pid, hops = 0; at && hops < 64; at = parentOf(at), hops++) {
    if (at === ancestor) return true;
    if (at === 1) return false; // vmkit may be pid 1 itself, in a container
  }
  return false;
}

export const HOST_CGROUPS: CgroupHost = {
  root: '/sys/fs/cgroup',
  procCgroup: () => readFileSync('/proc/self/cgroup', 'utf8'),
  uid: process.geteuid?.() ?? 0,
  ours: (pids) => pids.filter((pid) => descends(pid, process.pid)),
};

const words = (path: string) => {
  try {
    return readFileSync(path, 'utf8').split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
};

function canWrite(...paths: string[]): boolean {
  try {
    for (const path of paths) accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export const isV2 = (host: CgroupHost) => existsSync(join(host.root, 'cgroup.controllers'));

/** What planV2 decides from: vmkit's group and its ancestors as they are now. */
export function v2Facts(host: CgroupHost): V2Facts {
  const own = parseProcCgroup(host.procCgroup()).get('');
  const chain: GroupFacts[] = (own === undefined ? [] : ancestry(own)).map((path) => {
    const dir = join(host.root, path);
    return {
      path,
      writable: canWrite(dir, join(dir, 'cgroup.procs')),
      procs: words(join(dir, 'cgroup.procs')).map(Number),
      controllers: words(join(dir, 'cgroup.controllers')),
      subtree: words(join(dir, 'cgroup.subtree_control')),
    };
  });
  return { chain, ours: host.ours(chain[0]?.procs ?? []), uid: host.uid };
}

const reason = (error: unknown) => {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EBUSY')
    return 'EBUSY (the group holds processes: the kernel gives controllers only to groups without)';
  return code ?? (error as Error).message;
};

/** Writes `files` into `group`, made first. */
function makeGroup(group: string, files: Record<string, string>): void {
  mkdirSync(group, { recursive: true });
  for (const [file, value] of Object.entries(files)) writeFileSync(join(group, file), value);
}

function prepareV2(name: string, limits: Limits, host: CgroupHost): Placement {
  const plan = planV2(v2Facts(host));
  const warnings = [...plan.warnings];
  if (!plan.base) return { groups: [], warnings };
  const at = (path: string) => join(host.root, path);
  if (plan.move.length > 0) {
    // Failures here show as EBUSY below, where the controllers are enabled.
    const leaf = join(at(plan.base), SUPERVISOR_LEAF);
    for (const pid of plan.move) {
      try {
        mkdirSync(leaf, { recursive: true });
        writeFileSync(join(leaf, 'cgroup.procs'), String(pid));
      } catch (error) {
        // A helper that ended meanwhile is no longer in the way.
        if ((error as NodeJS.ErrnoException).code !== 'ESRCH')
          warnings.push(`cgroup v2: cannot move vmkit's process ${pid} into ${leaf}: ${reason(error)}`);
      }
    }
  }
  let usable: Controller[] = CONTROLLERS.filter((c) => !plan.missing.includes(c));
  for (const group of plan.enable) {
    try {
      mkdirSync(at(group), { recursive: true });
    } catch (error) {
      warnings.push(`cgroup v2: no limits applied: cannot make ${at(group)}: ${reason(error)}`);
      return { groups: [], warnings };
    }
    const enabled = words(join(at(group), 'cgroup.subtree_control'));
    for (const controller of usable.filter((c) => !enabled.includes(c))) {
      try {
        writeFileSync(join(at(group), 'cgroup.subtree_control'), `+${controller}`);
      } catch (error) {
        usable = usable.filter((c) => c !== controller);
        warnings.push(
          `${controller} limit not applied: cannot enable it for the children of ${at(group)}: ${reason(error)}`,
        );
      }
    }
  }
  if (usable.length === 0) return { groups: [], warnings };
  const leaf = join(at(plan.base), name);
  try {
    makeGroup(leaf, Object.assign({}, ...usable.map((c) => v2Files(c, limits))));
    return { groups: [leaf], warnings };
  } catch (error) {
    return { groups: [], warnings: [...warnings, `cgroup v2 limits not applied: ${leaf}: ${reason(error)}`] };
  }
}

function prepareV1(name: string, limits: Limits, host: CgroupHost): Placement {
  const placement: Placement = { groups: [], warnings: [] };
  const own = parseProcCgroup(host.procCgroup());
  for (const controller of CONTROLLERS) {
    const path = own.get(controller);
    if (path === undefined || !existsSync(join(host.root, controller))) {
      placement.warnings.push(
        `${controller} limit not applied: no cgroup v1 ${controller} hierarchy on this host`,
      );
      continue;
    }
    const group = join(host.root, controller, path, name);
    try {
      makeGroup(group, v1Files(controller, limits));
      placement.groups.push(group);
    } catch (error) {
      placement.warnings.push(`${controller} limit not applied: ${group}: ${reason(error)}`);
    }
  }
  return placement;
}

/** Where applyLimits puts a group named `name` from this process (existing or not). */
export function groupPaths(name: string, host: CgroupHost = HOST_CGROUPS): string[] {
  try {
    if (isV2(host)) {
      const base = planV2(v2Facts(host)).base;
      return base ? [join(host.root, base, name)] : [];
    }
    const own = parseProcCgroup(host.procCgroup());
    return CONTROLLERS.flatMap((controller) => {
      const path = own.get(controller);
      return path === undefined ? [] : [join(host.root, controller, path, name)];
    });
  } catch {
    return [];
  }
}

/**
 * The groups of `groups` that are a VMM group vmkit could have made for `name`: a folder named
 * `name` under the cgroup file system, reached by no `..`. A record of groups is vmkit's own,
 * but rmdir and kill as root go only where vmkit's own naming allows, whatever a record says.
 */
export function trustedGroups(
  groups: unknown[],
  name: string,
  log?: (line: string) => void,
  root = HOST_CGROUPS.root,
): string[] {
  const trusted: string[] = [];
  for (const group of groups) {
    const ok =
      typeof group === 'string' &&
      normalize(group) === group &&
      group.startsWith(`${root}/`) &&
      !group.split('/').includes('..') &&
      basename(group) === name;
    if (ok) trusted.push(group);
    else log?.(`cgroup ${JSON.stringify(group)} refused: not a group vmkit names ${name}`);
  }
  return trusted;
}

/**
 * SIGKILLs every process left in the groups: what the VMM forked before it ended. Nothing can
 * have joined them but the VMM's own descendants (moving a process into a group takes write
 * access to its root-owned `cgroup.procs`), so these are the VMM's, with no record needed.
 */
export async function endGroupProcesses(groups: string[], timeoutMs = 3000): Promise<void> {
  const members = (group: string) => {
    try {
      return readFileSync(join(group, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = [...new Set(groups.flatMap(members))].filter((pid) => pid > 1 && pid !== process.pid);
    if (pids.length === 0 || Date.now() > deadline) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Makes the groups named `name` for one VMM, with `limits` written, and no process in them yet:
 * made before the VMM starts, so that what is done for it (its guest RAM filled) counts there.
 * Calling it again for the same name finds the same groups.
 */
export function prepareGroups(name: string, limits: Limits, host = HOST_CGROUPS): Placement {
  return isV2(host) ? prepareV2(name, limits, host) : prepareV1(name, limits, host);
}

/** Moves process `pid` into `groups`: the groups it joined, and a warning for each it could not. */
export function joinGroups(groups: string[], pid: number): Placement {
  const placement: Placement = { groups: [], warnings: [] };
  for (const group of groups) {
    try {
      writeFileSync(join(group, 'cgroup.procs'), String(pid));
      placement.groups.push(group);
    } catch (error) {
      placement.warnings.push(
        `limits of ${group} not applied: process ${pid} cannot join it: ${reason(error)}`,
      );
    }
  }
  return placement;
}

/** Puts process `pid` into a group of its own named `name`, with `limits`. */
export function applyLimits(name: string, pid: number, limits: Limits, host = HOST_CGROUPS): Placement {
  const placement = prepareGroups(name, limits, host);
  const joined = joinGroups(placement.groups, pid);
  return { groups: joined.groups, warnings: [...placement.warnings, ...joined.warnings] };
}

/** Where VMM groups would go on this host, and what would not be applied: for `fleet node info`. */
export function describeGroups(host = HOST_CGROUPS): { vmmGroups: string; warnings: string[] } {
  if (isV2(host)) {
    const plan = planV2(v2Facts(host));
    return { vmmGroups: plan.base ? `cgroup v2, ${plan.why}` : 'none', warnings: plan.warnings };
  }
  const own = parseProcCgroup(host.procCgroup());
  const where = (c: Controller) => join(host.root, c, own.get(c) ?? '/').replace(/\/$/, '');
  const found = CONTROLLERS.filter((c) => own.has(c) && existsSync(join(host.root, c)));
  const usable = found.filter((c) => canWrite(where(c)));
  return {
    vmmGroups: usable.length
      ? `cgroup v1, under vmkit's own group in each hierarchy: ${usable.map(where).join(', ')}`
      : 'none',
    warnings: CONTROLLERS.filter((c) => !usable.includes(c)).map((c) =>
      found.includes(c)
        ? `${c} limit not applied: ${where(c)} is not writable by uid ${host.uid}`
        : `${c} limit not applied: no cgroup v1 ${c} hierarchy on this host`,
    ),
  };
}

/**
 * Removes the groups of a VMM that has ended. The kernel lets a group go a moment after its last
 * process exits, so each is retried for up to `timeoutMs`; one still busy then is reported.
 */
export async function removeGroups(groups: string[], timeoutMs = 3000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  const left: string[] = [];
  for (const group of groups) {
    for (;;) {
      try {
        rmdirSync(group);
        break;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (code !== 'EBUSY' || Date.now() > deadline) {
          left.push(`${group}: ${code}`);
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }
  return left;
}

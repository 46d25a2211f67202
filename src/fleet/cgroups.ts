import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { basename, join, normalize } from 'node:path';

/**
 * Resource limits for one VMM with cgroups: memory, CPU and pids. cgroup v2 (one unified
 * hierarchy) and v1 (a hierarchy per controller, as on this project's machine) are both handled;
 * each VMM's group is made under the group vmkit itself runs in, so any limit on vmkit still
 * holds for its VMMs. What cannot be applied is returned as warnings, never skipped silently.
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

const ROOT = '/sys/fs/cgroup';
const CONTROLLERS = ['memory', 'cpu', 'pids'] as const;
type Controller = (typeof CONTROLLERS)[number];
const PERIOD_US = 100_000;

/** The path of this process's group in hierarchy `key` (a v1 controller, or '' for v2). */
function ownGroup(key: string): string | undefined {
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n')) {
    const [, controllers, path] = line.split(':');
    if ((controllers ?? '').split(',').includes(key) || (key === '' && controllers === '')) return path;
  }
  return undefined;
}

const isV2 = () => existsSync(join(ROOT, 'cgroup.controllers'));

function v1Files(controller: Controller, limits: Limits): Record<string, string> {
  if (controller === 'memory') return { 'memory.limit_in_bytes': String(limits.memoryMiB * 2 ** 20) };
  if (controller === 'cpu')
    return { 'cpu.cfs_period_us': String(PERIOD_US), 'cpu.cfs_quota_us': String(limits.cpus * PERIOD_US) };
  return { 'pids.max': String(limits.pids) };
}

function v2Files(limits: Limits): Record<Controller, Record<string, string>> {
  return {
    memory: { 'memory.max': String(limits.memoryMiB * 2 ** 20) },
    cpu: { 'cpu.max': `${limits.cpus * PERIOD_US} ${PERIOD_US}` },
    pids: { 'pids.max': String(limits.pids) },
  };
}

const reason = (error: unknown) => (error as NodeJS.ErrnoException).code ?? (error as Error).message;

/** Puts process `pid` into a group of its own named `name`, with `limits`. */
export function applyLimits(name: string, pid: number, limits: Limits): Placement {
  const placement: Placement = { groups: [], warnings: [] };
  const place = (group: string, files: Record<string, string>, what: string) => {
    try {
      mkdirSync(group, { recursive: true });
      for (const [file, value] of Object.entries(files)) writeFileSync(join(group, file), value);
      writeFileSync(join(group, 'cgroup.procs'), String(pid));
      placement.groups.push(group);
    } catch (error) {
      placement.warnings.push(`${what} limit not applied: ${group}: ${reason(error)}`);
    }
  };
  if (isV2()) {
    const parent = join(ROOT, ownGroup('') ?? '/');
    const available = readFileSync(join(parent, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
    const files = v2Files(limits);
    const usable: Record<string, string> = {};
    for (const controller of CONTROLLERS) {
      if (!available.includes(controller)) {
        placement.warnings.push(
          `${controller} limit not applied: cgroup v2 controller ${controller} is not available in ${parent}`,
        );
        continue;
      }
      try {
        writeFileSync(join(parent, 'cgroup.subtree_control'), `+${controller}`);
        Object.assign(usable, files[controller]);
      } catch (error) {
        placement.warnings.push(
          `${controller} limit not applied: cannot enable it for subgroups of ${parent}: ${reason(error)}`,
        );
      }
    }
    if (Object.keys(usable).length > 0) place(join(parent, name), usable, 'cgroup v2');
    return placement;
  }
  for (const controller of CONTROLLERS) {
    const own = ownGroup(controller);
    if (own === undefined || !existsSync(join(ROOT, controller))) {
      placement.warnings.push(
        `${controller} limit not applied: no cgroup v1 ${controller} hierarchy on this host`,
      );
      continue;
    }
    place(join(ROOT, controller, own, name), v1Files(controller, limits), controller);
  }
  return placement;
}

/** Where applyLimits puts a group named `name` from this process (existing or not). */
export function groupPaths(name: string): string[] {
  try {
    if (isV2()) return [join(ROOT, ownGroup('') ?? '/', name)];
    return CONTROLLERS.flatMap((controller) => {
      const own = ownGroup(controller);
      return own === undefined ? [] : [join(ROOT, controller, own, name)];
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
export function trustedGroups(groups: unknown[], name: string, log?: (line: string) => void): string[] {
  const trusted: string[] = [];
  for (const group of groups) {
    const ok =
      typeof group === 'string' &&
      normalize(group) === group &&
      group.startsWith(`${ROOT}/`) &&
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

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { cpus, freemem, hostname, totalmem } from 'node:os';
import { chooseAccel } from '../backends/accel.js';
import type { FleetCore } from './fleet-core.js';
import { sleepStateInfo } from './snapshots/sleep.js';
import type { Instance } from './state/model.js';
import { describeGroups } from './vmm/cgroups.js';
import {
  JAIL_ID_BASE,
  jailUnavailable,
  jailWarning,
  namespacesUnavailable,
  userNamespaceUnavailable,
} from './vmm/jail.js';
import { instanceDir, liveRamPath, vmGroups, vmProcesses } from './vmm/vm.js';
import { noSandbox, sandboxAvailable } from './vmm/vmm-options.js';
import { fleetBackend } from './vmm/vmms.js';

/** The resident memory of a process, in KiB, from /proc; 0 when it is gone. */
export function residentKiB(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * The host memory an instance holds, in KiB: its VMM's own resident memory (RssAnon: not the
 * guest RAM pages it maps) plus the pages of its guest RAM file in shared memory, which are
 * held whether or not the VMM has touched them. 0 for an instance without a VMM.
 */
export function instanceMemoryKiB(pid: number | undefined, dir: string): number {
  if (!pid) return 0;
  let anon = 0;
  try {
    anon = Number(/RssAnon:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
  const ram = existsSync(liveRamPath(dir)) ? statSync(liveRamPath(dir)).blocks / 2 : 0;
  return anon + ram;
}

/** Which cgroup hierarchies this host has, and their controllers. */
export function cgroupInfo(): { version: string; controllers: string[] } {
  const root = '/sys/fs/cgroup';
  if (existsSync(`${root}/cgroup.controllers`)) {
    return {
      version: 'v2',
      controllers: readFileSync(`${root}/cgroup.controllers`, 'utf8').trim().split(/\s+/),
    };
  }
  const v1 = existsSync(root) ? readdirSync(root).filter((name) => existsSync(`${root}/${name}/tasks`)) : [];
  const unified = existsSync(`${root}/unified/cgroup.controllers`)
    ? readFileSync(`${root}/unified/cgroup.controllers`, 'utf8').trim().split(/\s+/).filter(Boolean)
    : [];
  return {
    version: v1.length > 0 ? (unified.length > 0 ? 'v1 + v2 (hybrid)' : 'v1') : 'none found',
    controllers: [...v1, ...unified.map((c) => `${c} (v2)`)],
  };
}

export async function nodeInfo(fleet: FleetCore) {
  const accel = await chooseAccel('auto', fleet.runtime);
  const groups = describeGroups();
  return {
    host: hostname(),
    cpus: cpus().length,
    memoryMiB: Math.round(totalmem() / 2 ** 20),
    freeMemoryMiB: Math.round(freemem() / 2 ** 20),
    accelerator: accel.accel,
    acceleratorReason: accel.reason,
    cgroups: { ...cgroupInfo(), ...groups },
    limits:
      groups.warnings.length > 0
        ? `not all applied (each instance's warnings say so too): ${groups.warnings.join('; ')}`
        : `applied: memory, cpu and pids per VMM, each in a group of its own (${groups.vmmGroups})`,
    sandbox: (await sandboxAvailable(fleet.runtime))
      ? `applied: ${fleetBackend().sandbox?.description}`
      : `not applied: ${noSandbox()}`,
    jail: jailInfo(fleet),
    fleetDir: fleet.dir,
    vmkitVersion: '0.1.0',
  };
}

/** Whether fleet VMMs run jailed on this node, and how; or why not. */
function jailInfo(fleet: FleetCore): string {
  const fleetDir = fleet.dir;
  const unavailable = jailUnavailable(fleet.runtime);
  if (unavailable) return `not applied: ${jailWarning(unavailable)}`;
  const noNamespaces = namespacesUnavailable(fleet.runtime);
  const noUser = noNamespaces ? undefined : userNamespaceUnavailable(fleet.runtime);
  const namespaces = noNamespaces
    ? `a mount namespace of its own (unshare; no pid or network namespace: ${noNamespaces})`
    : noUser
      ? `mount, pid and network namespaces of its own (unshare: it sees only its own processes and has no network but its sockets; no user namespace: ${noUser})`
      : 'user, mount, pid and network namespaces of its own (unshare: its user namespace maps its uid and gid alone, it sees only its own processes and has no network but its sockets)';
  return `applied: each VMM runs as an unprivileged uid of its tenant's (from ${JAIL_ID_BASE} up, no /etc/passwd entry; setpriv, no capabilities, no new privileges) in ${namespaces}, chrooted into a tmpfs root that holds read-only system folders, its image, its base snapshot and vmkit's code, and of ${fleetDir} only its own instance folder, its tenant's switch folder and its guest RAM file`;
}

export function nodeStats(fleet: FleetCore) {
  const byTenant: Record<string, Record<string, Record<string, number>>> = {};
  const byState: Record<string, number> = {};
  let residentMiB = 0;
  for (const instance of fleet.store.listInstances()) {
    byState[instance.state] = (byState[instance.state] ?? 0) + 1;
    byTenant[instance.tenant] ??= {};
    const pools = byTenant[instance.tenant] as Record<string, Record<string, number>>;
    pools[instance.pool] ??= {};
    const states = pools[instance.pool] as Record<string, number>;
    states[instance.state] = (states[instance.state] ?? 0) + 1;
    // Only states that hold a VMM: looking for one of a stopped instance scans all of /proc.
    if (instance.state !== 'Running' && instance.state !== 'Warm') continue;
    const dir = instanceDir(fleet.dir, instance.seq);
    for (const vmm of vmProcesses(dir)) residentMiB += instanceMemoryKiB(vmm.pid, dir) / 1024;
  }
  return { instances: byState, tenants: byTenant, hostMemoryMiB: Math.round(residentMiB) };
}

/** Everything `instance info` shows: the record, its VMM's memory, its sleep state's size. */
export function instanceInfo(fleet: FleetCore, instance: Instance) {
  const dir = instanceDir(fleet.dir, instance.seq);
  const pool = fleet.store.pool(instance.tenant, instance.pool);
  const vmm = vmProcesses(dir)[0];
  const sleep = sleepStateInfo(dir);
  return {
    ...instance,
    folder: dir,
    vcpus: pool.vcpus,
    memoryMiB: pool.memoryMiB,
    vmmResidentMiB: vmm ? Math.round(residentKiB(vmm.pid) / 1024) : 0,
    /** The VMM's own memory plus its guest RAM file's pages: what the instance holds of the host's. */
    hostMemoryMiB: Math.round(instanceMemoryKiB(vmm?.pid, dir) / 1024),
    /** The sleep state: RAM pages that differ from the pool's base, device state, the data disk. */
    sleepState: sleep && {
      ramDeltaPages: sleep.pages,
      ramDeltaBytes: sleep.bytes,
      deviceStateBytes: sleep.deviceStateBytes,
      dataDiskBytes: sleep.dataDiskBytes,
      guestRamBytes: sleep.ramBytes,
      deltaOverGuestRam: Number(((sleep.bytes + sleep.deviceStateBytes) / sleep.ramBytes).toFixed(4)),
    },
    cgroups: vmm ? (vmGroups(dir)?.groups ?? []) : [],
  };
}

import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chooseAccel } from '../../backends/accel.js';
import type { ServiceNicSpec } from '../../backends/backend.js';
import { ConfigError, ImageError } from '../../errors.js';
import { listImages } from '../../images/build.js';
import type { BootImage } from '../../images/types.js';
import { nameSwitchPorts, switchSocket } from '../../network/switch-daemon.js';
import {
  type DetachedRecord,
  isRunning,
  readRecord,
  stopDetached,
  waitForExit,
} from '../../runtime/detached.js';
import { type Runtime, SHARED_MEMORY_DIR } from '../../runtime/runtime.js';
import { readPlainFile } from '../../util/files.js';
import { ensurePrivateDir } from '../../util/private.js';
import { createQcow2 } from '../../util/qcow2.js';
import { buildPoolImage, imageOf } from '../images/pool-image.js';
import { refuseWithoutLimits } from '../policy/required-limits.js';
import type { Instance, Pool, Tenant } from '../state/model.js';
import {
  applyLimits,
  endGroupProcesses,
  groupPaths,
  type Placement,
  prepareGroups,
  removeGroups,
  trustedGroups,
} from './cgroups.js';
import { jailed, jailWarnings, prepareJail, vmmUid } from './jail.js';
import { removeMetadataDocument } from './metadata.js';
import { startRelayDetached, stopRelay } from './outbound.js';
import { ensureRecordsDir, recordsDir, vmmFiles, writeRecordFile } from './records.js';
import { secretsDisk } from './secrets-disk.js';
import { withVm } from './vm-control.js';
import { metadataNic, noSandbox, outboundNic, sandboxAvailable } from './vmm-options.js';
import { fleetVmms } from './vmms.js';

/**
 * The VM side of fleet instances: detached QEMU processes, one folder each under
 * `<fleet>/vm/<seq>/` (data disk, sockets, console log, the device part of a sleep state),
 * plugged into their tenant's detached switch in `<fleet>/net/<tenant>/`.
 *
 * As root the VMM runs as its tenant's uid and owns that folder, so nothing in it is trusted:
 * what vmkit acts on as root (the VMM's record of pid, start time and marker, its cgroups, QEMU's
 * log, the RAM delta and the marker of a whole sleep state) lives beside it in
 * `<fleet>/vm/<seq>.records/`, vmkit's own (mode 0700, outside the jail), and root writes into
 * the VMM's folder only new files, never through a name the VMM may have put there.
 */
export interface VmContext {
  fleetDir: string;
  runtime: Runtime;
  log?: (line: string) => void;
}

export const instanceDir = (fleetDir: string, seq: number) => join(fleetDir, 'vm', String(seq));
export const networkDir = (fleetDir: string, tenant: string) => join(fleetDir, 'net', tenant);
export const dataDiskPath = (dir: string) => join(dir, 'data.qcow2');
/**
 * A disk image's root disk (Debian images, recipe pools): the base's overlay on the image, and
 * each instance's overlay on the base's, made afresh at every start (the base's RAM knows that
 * disk as it was when the base was saved) and kept across sleep and wake.
 */
export const rootDiskPath = (dir: string) => join(dir, 'root.qcow2');

export { hasSleepState, recordsDir, removeSleepState, sleepRecordsDir, sleepStatePath } from './records.js';
export {
  BOOT_TIMEOUT_MS,
  DRAIN_TIMEOUT_MS,
  pauseVm,
  resumeVm,
  runInGuest,
  vmStatus,
  withVm,
} from './vm-control.js';

/** QEMU's own memory beside guest RAM under TCG (translation cache, device buffers). */
const VMM_OVERHEAD_MIB = 256;
const VMM_PIDS = 256;

/** The instance's folder and its data disk: what create makes and destroy removes. */
export async function prepareVm(
  fleetDir: string,
  instance: Instance,
  pool: Pool,
  tenant: Tenant,
): Promise<string> {
  const dir = instanceDir(fleetDir, instance.seq);
  if (
    fleetVmms()
      .socketPaths(dir)
      .some((path) => Buffer.byteLength(path) > 107)
  ) {
    throw new ConfigError(
      `fleet folder ${fleetDir} is too long for unix socket paths (107 bytes); use a shorter --fleet-dir`,
    );
  }
  // Handed to the tenant's uid when its VMM is jailed: that owner is expected.
  ensurePrivateDir(dir, { owners: [tenant.uid] });
  if (!existsSync(dataDiskPath(dir))) {
    await createQcow2(dataDiskPath(dir), { sizeMiB: pool.dataDiskMiB });
  }
  return dir;
}

/** Every process that belongs to the instance's folder: its recorded VMM, or one whose record was never written. */
export function vmProcesses(dir: string): DetachedRecord[] {
  const recorded = readRecord(vmmFiles(dir).record);
  if (isRunning(recorded)) return [recorded];
  // The VMM's own argument (and its jail wrapper's copy of it), not any process naming the path.
  return fleetVmms().processesIn(dir);
}

/** A VMM brought up, and what could not be applied to it. */
export interface Started {
  record: DetachedRecord;
  warnings: string[];
  /** How long each step took, for the audit log. */
  steps: string;
}

const placementPath = (dir: string) => join(recordsDir(dir), 'cgroups.json');
/** The name of the VMM's cgroups: from its folder's path, so never from anything the VMM wrote. */
const vmGroupName = (dir: string) => `vmkit-${createHash('sha256').update(dir).digest('hex').slice(0, 12)}`;
/** The VMM's cgroups: guest memory plus room for QEMU itself, its vCPUs' worth of CPU time, a bound on threads. */
const vmLimits = (pool: Pool) => ({
  memoryMiB: pool.memoryMiB + VMM_OVERHEAD_MIB,
  cpus: pool.vcpus,
  pids: VMM_PIDS,
});

/**
 * Makes the VMM's cgroups before it starts, so that its guest RAM can be filled from within
 * them (ram-fill.ts). Recorded in the folder like limitVm's, so that any later call removes them.
 */
export function prepareVmGroups(dir: string, pool: Pool): string[] {
  const placement = prepareGroups(vmGroupName(dir), vmLimits(pool));
  writeRecordFile(dir, 'cgroups.json', JSON.stringify(placement));
  return placement.groups;
}

/** Puts the VMM in its cgroups (made now, or found made by prepareVmGroups). */
function limitVm(dir: string, record: DetachedRecord, pool: Pool): string[] {
  const placement = applyLimits(vmGroupName(dir), record.pid, vmLimits(pool));
  writeRecordFile(dir, 'cgroups.json', JSON.stringify(placement));
  refuseWithoutLimits(pool, placement.warnings); // the callers end the VMM
  return placement.warnings;
}

/** The cgroups the folder's VMM was put in, for `instance info` and the tests. */
export function vmGroups(dir: string): Placement | undefined {
  try {
    return JSON.parse(readFileSync(placementPath(dir), 'utf8')) as Placement;
  } catch {
    return undefined;
  }
}

const logRefusal = (line: string) => process.stderr.write(`vmkit: ${line}\n`);

/**
 * Ends whatever VMM the folder has, at once: the process its record names, if it is still that
 * process (its start time, its command line), then whatever else is left in its cgroups (what
 * the VMM forked: nothing of the tenant's uid outlives it to race the removal of its files).
 */
export async function killVm(dir: string, log: (line: string) => void = logRefusal): Promise<number> {
  const { record: recordPath } = vmmFiles(dir);
  const recorded = readRecord(recordPath);
  const processes = vmProcesses(dir);
  for (const record of processes) {
    await stopDetached(record, 0, (reason) => log(`VMM of ${dir}: ${reason}`));
  }
  if (recorded && !processes.some((p) => p.pid === recorded.pid)) {
    await stopDetached(recorded, 0, (reason) => log(`VMM of ${dir}: ${reason}`));
  }
  rmSync(recordPath, { force: true });
  await stopRelay(dir);
  // The RAM file first: its pages are charged to the VMM's memory group.
  if (existsSync(dir)) {
    removeRamFiles(dir);
    removeMetadataDocument(dir);
  }
  // Where this process would put them too: a VMM of an older layout, or one whose record was lost.
  const placed = vmGroups(dir)?.groups;
  const recordedGroups = trustedGroups(Array.isArray(placed) ? placed : [], vmGroupName(dir), (line) =>
    log(`VMM of ${dir}: ${line}`),
  );
  const groups = [...new Set([...recordedGroups, ...groupPaths(vmGroupName(dir))])];
  await endGroupProcesses(groups);
  const busy = await removeGroups(groups);
  if (busy.length === 0) rmSync(placementPath(dir), { force: true });
  return processes.length;
}

/**
 * The image build `revision` names, so that a wake restores into the very kernel it slept in.
 * Built again only when that build is gone from the cache, and then it must come out the same.
 */
export async function guestImage(
  ctx: VmContext,
  revision: string,
  pool: Pool,
  what: string,
): Promise<BootImage> {
  const cached = (await listImages()).find((image) => image.key === revision);
  if (cached) return cached;
  const { image: built } = await buildPoolImage(imageOf(pool), {
    runtime: ctx.runtime,
    onProgress: (line) => ctx.log?.(`image: ${line}`),
  });
  if (built.key !== revision) {
    throw new ImageError(
      `${what} runs image ${pool.image} revision ${revision}, no longer in the cache; it builds as ${built.key} now (rebuild the pool, or recreate the instance)`,
    );
  }
  return built;
}

const ramBase = (dir: string) => (existsSync(SHARED_MEMORY_DIR) ? SHARED_MEMORY_DIR : dir);
const ramPrefix = (dir: string) =>
  `vmkit-fleet-${createHash('sha256').update(dir).digest('hex').slice(0, 12)}-`;

/**
 * The running VMM's guest RAM: a file in shared memory named after the folder, mapped shared,
 * so that sleep can compare it with the pool's base page by page. Removed when the VMM ends.
 */
export const liveRamPath = (dir: string) => join(ramBase(dir), `${ramPrefix(dir)}live.ram`);

/** The folder's RAM files (of an ended VMM, or left by an older vmkit that named them at random). */
function removeRamFiles(dir: string): void {
  const prefix = ramPrefix(dir);
  for (const name of readdirSync(ramBase(dir))) {
    if (name.startsWith(prefix)) rmSync(join(ramBase(dir), name), { force: true });
  }
}

/** One VMM of a pool's shape: an instance's, or the pool's base while it is made. */
export interface VmLayout {
  name: string;
  dir: string;
  tenant: string;
  mac: string;
  /** The metadata NIC (the same device for every layout; only an instance's has an endpoint). */
  metadataNic: ServiceNicSpec;
  /** A third NIC with outbound access (the tenant's choice, so the same for its pools' bases). */
  outbound: boolean;
  /** The tenant's uid the VMM runs as in its jail; undefined where it cannot be jailed. */
  uid: number | undefined;
}

/** Starts the layout's VMM detached, on the RAM file at liveRamPath (made already when `incoming`). */
export async function launchVm(
  ctx: VmContext,
  layout: VmLayout,
  pool: Pool,
  image: BootImage,
  incoming: boolean,
  /** Folders it reads besides its own and its image's (the base it restores from). */
  reads: string[] = [],
): Promise<DetachedRecord> {
  const accel = await chooseAccel('auto', ctx.runtime);
  const sandbox = await sandboxAvailable(ctx.runtime);
  const ram = liveRamPath(layout.dir);
  if (!incoming) {
    rmSync(ram, { force: true });
    writeFileSync(ram, '', { mode: 0o600 });
    truncateSync(ram, pool.memoryMiB * 2 ** 20);
  }
  const switchDir = networkDir(ctx.fleetDir, layout.tenant);
  const jail =
    layout.uid === undefined
      ? undefined
      : prepareJail({
          uid: layout.uid,
          dir: layout.dir,
          ramFile: ram,
          switchSocket: switchSocket(switchDir),
          // The files, not the image's folder: a content store's folders may be the caller's alone.
          reads: [image.kernel, image.initrd, ...(image.disk ? [image.disk] : []), switchDir, ...reads],
          fleetDir: ctx.fleetDir,
          runtime: ctx.runtime,
        });
  ensureRecordsDir(layout.dir);
  // The outbound relay listens before QEMU connects to it, and goes when QEMU goes.
  const relay = layout.outbound ? await startRelayDetached(layout.dir, layout.uid) : undefined;
  return fleetVmms()
    .launch(
      {
        name: layout.name,
        stateDir: layout.dir,
        kernel: image.kernel,
        initrd: image.initrd,
        cmdline: image.cmdline,
        memoryMiB: pool.memoryMiB,
        cpus: pool.vcpus,
        accel: accel.accel,
        nics: [{ socketPath: switchSocket(switchDir), mac: layout.mac }],
        memory: { path: ram, share: true },
        disks: [...(image.disk ? [rootDiskPath(layout.dir)] : []), dataDiskPath(layout.dir)],
        serviceNics: [layout.metadataNic],
        readOnlyDisks: [secretsDisk(layout.dir)],
        ...(layout.outbound ? { outbound: outboundNic(layout.name) } : {}),
        sandbox,
        incoming,
        startTimeoutMs: 30_000,
      },
      { wrap: jail && ((program, args) => jailed(jail, program, args)), files: vmmFiles(layout.dir) },
    )
    .catch(async (error) => {
      if (relay) await stopRelay(layout.dir);
      throw error;
    });
}

export const instanceLayout = (ctx: VmContext, instance: Instance, tenant: Tenant): VmLayout => ({
  name: `${instance.tenant}-${instance.pool}-${instance.id}`,
  dir: instanceDir(ctx.fleetDir, instance.seq),
  tenant: instance.tenant,
  mac: instance.mac,
  metadataNic: metadataNic(`fleet/${instance.path}`, instanceDir(ctx.fleetDir, instance.seq)),
  outbound: tenant.outbound,
  uid: vmmUid(tenant, ctx.runtime),
});

/** The limits put on a VMM just started, and what could not be applied. */
export async function settleVm(
  ctx: VmContext,
  dir: string,
  record: DetachedRecord,
  pool: Pool,
): Promise<string[]> {
  const sandbox = (await sandboxAvailable(ctx.runtime)) ? [] : [noSandbox()];
  return [...limitVm(dir, record, pool), ...sandbox, ...jailWarnings(ctx.runtime)];
}

/** Ends the VMM: asked to quit, then SIGKILL if it lingers. */
export async function stopVm(dir: string, name: string, log?: (line: string) => void): Promise<void> {
  const record = readRecord(vmmFiles(dir).record);
  if (isRunning(record)) {
    await withVm(dir, name, (vm) => vm.quit()).catch(() => {});
    await waitForExit(record, 5000);
  }
  await killVm(dir, log);
}

/** Tells the tenant's switch which MAC is which instance, for its per-port counters. */
export function namePorts(fleetDir: string, tenant: string, instances: Instance[]): void {
  const names: Record<string, string> = {};
  for (const instance of instances) names[instance.mac] = instance.path;
  nameSwitchPorts(networkDir(fleetDir, tenant), names);
}

/** What the instance's serial console printed since its last boot. */
export function consoleText(fleetDir: string, instance: Instance): string {
  const path = fleetVmms().consoleLogPath(instanceDir(fleetDir, instance.seq));
  if (!existsSync(path)) throw new ConfigError(`instance ${instance.path} has no console log yet (${path})`);
  return readPlainFile(path).toString('utf8'); // the VMM's file: never through a link it put there
}

/** Removes the folder and its records: only once its VMM and whatever it forked are gone (killVm). */
export function removeVmFiles(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  rmSync(recordsDir(dir), { recursive: true, force: true });
}

import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { RawResult } from '../agent/backdoor.js';
import { chooseAccel } from '../backends/accel.js';
import { SOCKETS } from '../backends/qemu/args.js';
import { AttachedQemu, launchDetachedQemu, vmmRecordPath } from '../backends/qemu/detached.js';
import { migrateIn, migrateOut } from '../backends/qemu/migration.js';
import { ConfigError, ImageError, MachineCrashedError, VmkitError } from '../errors.js';
import { profileNamed } from '../guest/profiles/index.js';
import { buildImage, listImages } from '../images/build.js';
import type { BootImage } from '../images/types.js';
import { ensureSwitchDaemon, switchSocket } from '../network/switch-daemon.js';
import {
  type DetachedRecord,
  isRunning,
  processesNaming,
  readRecord,
  stopDetached,
  waitForExit,
} from '../runtime/detached.js';
import { type Runtime, SHARED_MEMORY_DIR } from '../runtime/runtime.js';
import { runTool } from '../util/exec.js';
import { shellQuote } from '../util/shell.js';
import { applyLimits, type Placement, removeGroups } from './cgroups.js';
import type { Instance, Pool } from './model.js';
import {
  METADATA_NIC_ADDRESS,
  metadataNic,
  NO_SANDBOX,
  qemuHasSandbox,
  SANDBOX_ARGS,
} from './vmm-options.js';

/**
 * The VM side of fleet instances: detached QEMU processes, one folder each under
 * `<fleet>/vm/<seq>/` (data disk, sockets, logs, the VMM's record, a sleep state), plugged into
 * their tenant's detached switch in `<fleet>/net/<tenant>/`.
 */
export interface VmContext {
  fleetDir: string;
  runtime: Runtime;
  log?: (line: string) => void;
}

export const instanceDir = (fleetDir: string, seq: number) => join(fleetDir, 'vm', String(seq));
export const networkDir = (fleetDir: string, tenant: string) => join(fleetDir, 'net', tenant);
export const dataDiskPath = (dir: string) => join(dir, 'data.qcow2');
export const sleepStatePath = (dir: string) => join(dir, 'sleep', 'state');
/** Written by wake inside the guest: when it last woke from sleep. */
export const WOKE_FILE = '/run/vmkit/woke';

const BOOT_TIMEOUT_MS = 120_000;
/** QEMU's own memory beside guest RAM under TCG (translation cache, device buffers). */
const VMM_OVERHEAD_MIB = 256;
const VMM_PIDS = 256;
const SAVE_TIMEOUT_MS = 300_000;

/** The instance's folder and its data disk: what create makes and destroy removes. */
export async function prepareVm(fleetDir: string, instance: Instance, pool: Pool): Promise<string> {
  const dir = instanceDir(fleetDir, instance.seq);
  if (Buffer.byteLength(join(dir, SOCKETS.transfer)) > 107) {
    throw new ConfigError(
      `fleet folder ${fleetDir} is too long for unix socket paths (107 bytes); use a shorter --fleet-dir`,
    );
  }
  mkdirSync(dir, { recursive: true });
  if (!existsSync(dataDiskPath(dir))) {
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', dataDiskPath(dir), `${pool.dataDiskMiB}M`]);
  }
  return dir;
}

/** Every process that belongs to the instance's folder: its recorded VMM, or one whose record was never written. */
export function vmProcesses(dir: string): DetachedRecord[] {
  const recorded = readRecord(vmmRecordPath(dir));
  if (isRunning(recorded)) return [recorded];
  return processesNaming(join(dir, SOCKETS.qmp));
}

/** A VMM brought up, and what could not be applied to it. */
export interface Started {
  record: DetachedRecord;
  warnings: string[];
}

const placementPath = (dir: string) => join(dir, 'cgroups.json');

/**
 * Puts the VMM in cgroups of its own: guest memory plus room for QEMU itself, its vCPUs' worth
 * of CPU time, a bound on threads. Recorded in the folder, so that any later call removes them.
 */
function limitVm(dir: string, record: DetachedRecord, pool: Pool): string[] {
  const name = `vmkit-${createHash('sha256').update(dir).digest('hex').slice(0, 12)}`;
  const placement = applyLimits(name, record.pid, {
    memoryMiB: pool.memoryMiB + VMM_OVERHEAD_MIB,
    cpus: pool.vcpus,
    pids: VMM_PIDS,
  });
  writeFileSync(placementPath(dir), JSON.stringify(placement));
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

/** Ends whatever VMM the folder has, at once. */
export async function killVm(dir: string): Promise<number> {
  const processes = vmProcesses(dir);
  for (const record of processes) await stopDetached(record, 0);
  rmSync(vmmRecordPath(dir), { force: true });
  const busy = await removeGroups(vmGroups(dir)?.groups ?? []);
  if (busy.length === 0) rmSync(placementPath(dir), { force: true });
  if (existsSync(dir)) removeRamFiles(dir);
  return processes.length;
}

/**
 * The image an instance runs: the build its revision names (the pool's image when the instance
 * was made), so that a wake restores into the very kernel it slept in. Built again only when
 * that build is gone from the cache, and then it must come out the same.
 */
async function guestImage(ctx: VmContext, instance: Instance, pool: Pool): Promise<BootImage> {
  const cached = (await listImages()).find((image) => image.key === instance.revision);
  if (cached) return cached;
  const built = await buildImage(pool.image, {
    runtime: ctx.runtime,
    onProgress: (line) => ctx.log?.(`image: ${line}`),
  });
  if (built.key !== instance.revision) {
    throw new ImageError(
      `instance ${instance.path} runs image ${pool.image} revision ${instance.revision}, no longer in the cache; it builds as ${built.key} now (recreate the instance)`,
    );
  }
  return built;
}

const ramBase = (dir: string) => (existsSync(SHARED_MEMORY_DIR) ? SHARED_MEMORY_DIR : dir);
const ramPrefix = (dir: string) =>
  `vmkit-fleet-${createHash('sha256').update(dir).digest('hex').slice(0, 12)}-`;

/** A RAM file in shared memory named after the folder, unlinked once QEMU has it mapped. */
function ramPath(dir: string): string {
  return join(ramBase(dir), `${ramPrefix(dir)}${randomBytes(4).toString('hex')}.ram`);
}

/** RAM files of the folder's VMMs that a start cut off before unlinking them. */
function removeRamFiles(dir: string): void {
  const prefix = ramPrefix(dir);
  for (const name of readdirSync(ramBase(dir))) {
    if (name.startsWith(prefix)) rmSync(join(ramBase(dir), name), { force: true });
  }
}

async function launch(ctx: VmContext, instance: Instance, pool: Pool, image: BootImage, incoming: boolean) {
  const dir = instanceDir(ctx.fleetDir, instance.seq);
  const accel = await chooseAccel('auto', ctx.runtime);
  const sandbox = await qemuHasSandbox(ctx.runtime);
  const memory = ramPath(dir);
  try {
    return await launchDetachedQemu({
      name: `${instance.tenant}-${instance.pool}-${instance.id}`,
      stateDir: dir,
      kernel: image.kernel,
      initrd: image.initrd,
      cmdline: image.cmdline,
      memoryMiB: pool.memoryMiB,
      cpus: pool.vcpus,
      accel: accel.accel,
      nics: [{ socketPath: switchSocket(networkDir(ctx.fleetDir, instance.tenant)), mac: instance.mac }],
      memory: { path: memory, share: true },
      disks: [dataDiskPath(dir)],
      extraArgs: [...metadataNic(ctx.fleetDir, instance), ...(sandbox ? SANDBOX_ARGS : [])],
      incoming,
      startTimeoutMs: 30_000,
    });
  } finally {
    rmSync(memory, { force: true }); // mapped by QEMU by now, or never to be
  }
}

/** Runs `script` as root in the instance's guest over a short-lived attachment. */
async function runInGuest(
  attached: AttachedQemu,
  script: string,
  what: string,
  bannerWaitMs?: number,
): Promise<void> {
  const agent = await attached.agent(BOOT_TIMEOUT_MS, bannerWaitMs);
  const result = await agent.run(script, 30_000);
  if (result.status !== 0) {
    throw new MachineCrashedError(
      attached.name,
      `${what} failed (status ${result.status}): ${result.stderr.toString().trim()}`,
      attached.consoleTail(),
    );
  }
}

async function withVm<T>(dir: string, name: string, work: (vm: AttachedQemu) => Promise<T>): Promise<T> {
  const attached = await AttachedQemu.attach(name, dir);
  try {
    return await work(attached);
  } finally {
    attached.detach();
  }
}

const guestName = (instance: Instance) => instance.id;

/** Boots the instance's VMM detached and sets the guest up (hostname, address); returns its record. */
export async function bootVm(ctx: VmContext, instance: Instance, pool: Pool): Promise<Started> {
  const image = await guestImage(ctx, instance, pool);
  await ensureSwitchDaemon(networkDir(ctx.fleetDir, instance.tenant), instance.tenant);
  const dir = instanceDir(ctx.fleetDir, instance.seq);
  rmSync(join(dir, 'console.log'), { force: true });
  const record = await launch(ctx, instance, pool, image, false);
  try {
    const warnings = [
      ...limitVm(dir, record, pool),
      ...((await qemuHasSandbox(ctx.runtime)) ? [] : [NO_SANDBOX]),
    ];
    const setup = profileNamed(image.profile).afterBoot({
      hostname: guestName(instance),
      nics: [
        { index: 0, address: instance.address },
        { index: 1, address: METADATA_NIC_ADDRESS },
      ],
      hosts: {},
    });
    await withVm(dir, instance.path, (vm) =>
      runInGuest(vm, setup, 'guest set-up after boot', BOOT_TIMEOUT_MS),
    );
    return { record, warnings };
  } catch (error) {
    await killVm(dir);
    throw error;
  }
}

/** Ends the VMM: QMP quit, then SIGKILL if it lingers. */
export async function stopVm(dir: string, name: string): Promise<void> {
  const record = readRecord(vmmRecordPath(dir));
  if (isRunning(record)) {
    await withVm(dir, name, (vm) => vm.qmp.execute('quit')).catch(() => {});
    if (!(await waitForExit(record, 5000))) await stopDetached(record, 0);
  }
  await killVm(dir);
}

export async function pauseVm(dir: string, name: string): Promise<void> {
  await withVm(dir, name, (vm) => vm.qmp.execute('stop'));
}

export async function resumeVm(dir: string, name: string): Promise<void> {
  await withVm(dir, name, (vm) => vm.qmp.execute('cont'));
}

/** What QEMU says about its guest: "running", "paused", ... */
export async function vmStatus(dir: string, name: string): Promise<string> {
  return withVm(dir, name, async (vm) => (await vm.qmp.execute<{ status: string }>('query-status')).status);
}

/**
 * Saves the guest (CPU, devices and RAM, by QEMU migration) into `sleep/state`, then ends the
 * VMM. The state appears under its final name only once complete, so a crash leaves either a
 * whole sleep state or none.
 */
export async function sleepVm(dir: string, name: string): Promise<number> {
  const state = sleepStatePath(dir);
  mkdirSync(join(dir, 'sleep'), { recursive: true });
  const partial = `${state}.part`;
  rmSync(partial, { force: true });
  await withVm(dir, name, async (vm) => {
    await vm.qmp.execute('stop');
    await migrateOut(vm.qmp, partial, {
      ignoreShared: false,
      timeoutMs: SAVE_TIMEOUT_MS,
      what: `sleep of ${name}`,
    });
  });
  renameSync(partial, state);
  await stopVm(dir, name);
  return statSync(state).size;
}

/**
 * Restores the instance from its sleep state into a new detached VMM, then refreshes the
 * guest's clock and entropy and tells it that it woke (WOKE_FILE). The state is removed once
 * the guest runs again.
 */
export async function wakeVm(ctx: VmContext, instance: Instance, pool: Pool): Promise<Started> {
  const dir = instanceDir(ctx.fleetDir, instance.seq);
  const state = sleepStatePath(dir);
  if (!existsSync(state)) throw new VmkitError(`instance ${instance.path} has no sleep state in ${dir}`);
  const image = await guestImage(ctx, instance, pool);
  await ensureSwitchDaemon(networkDir(ctx.fleetDir, instance.tenant), instance.tenant);
  const record = await launch(ctx, instance, pool, image, true);
  try {
    const warnings = [
      ...limitVm(dir, record, pool),
      ...((await qemuHasSandbox(ctx.runtime)) ? [] : [NO_SANDBOX]),
    ];
    await withVm(dir, instance.path, async (vm) => {
      await migrateIn(vm.qmp, state, { ignoreShared: false, timeoutMs: SAVE_TIMEOUT_MS });
      const now = Math.floor(Date.now() / 1000);
      const setup = profileNamed(image.profile).afterRestore({
        clockSeconds: now,
        entropyHex: randomBytes(64).toString('hex'),
        renumber: [],
        hosts: {},
      });
      await runInGuest(
        vm,
        `${setup}\nmkdir -p /run/vmkit && echo ${now} > ${shellQuote(WOKE_FILE)}`,
        'guest set-up after wake',
      );
    });
    return { record, warnings };
  } catch (error) {
    await killVm(dir);
    throw error;
  }
}

/** Runs a command (argv, quoted for sh) in the running instance; returns status and output. */
export async function execVm(
  dir: string,
  name: string,
  command: string[],
  timeoutMs: number,
): Promise<RawResult> {
  return withVm(dir, name, async (vm) => {
    const agent = await vm.agent();
    return agent.run(command.map(shellQuote).join(' '), timeoutMs);
  });
}

export function removeVmFiles(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Runs each script `next()` hands out in the running instance over one attachment, until it
 * hands out undefined; `onResult` sees every result. For `instance shell`.
 */
export async function shellVm(
  dir: string,
  name: string,
  next: () => Promise<string | undefined>,
  onResult: (script: string, result: RawResult) => void,
  timeoutMs: number,
): Promise<number> {
  return withVm(dir, name, async (vm) => {
    const agent = await vm.agent();
    let count = 0;
    for (let script = await next(); script !== undefined; script = await next()) {
      if (script.trim() === '') continue;
      onResult(script, await agent.run(script, timeoutMs));
      count++;
    }
    return count;
  });
}

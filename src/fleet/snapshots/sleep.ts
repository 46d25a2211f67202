import { randomBytes } from 'node:crypto';
import {
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { AttachedVmm } from '../../backends/detached.js';
import { RESTORED_AGENT_BANNER_WAIT_MS } from '../../backends/detached.js';
import { SnapshotError } from '../../errors.js';
import { posixCommands } from '../../guest/profiles/commands.js';
import { profileNamed } from '../../guest/profiles/index.js';
import type { BootImage } from '../../images/types.js';
import { setUpRestoredGuest } from '../../machine/guest-setup.js';
import { newMachineId } from '../../machine/identity.js';
import { ensureSwitchDaemon } from '../../network/switch-daemon.js';
import type { DetachedRecord } from '../../runtime/detached.js';
import { ensureDirSync } from '../../util/files.js';
import { PRIVATE_FILE } from '../../util/private.js';
import { createQcow2 } from '../../util/qcow2.js';
import { shellQuote } from '../../util/shell.js';
import { audit } from '../state/audit.js';
import type { Instance, Pool, Tenant } from '../state/model.js';
import { type StepTimer, stepTimer } from '../state/steps.js';
import { vmmUid } from '../vmm/jail.js';
import { writeMetadataDocument } from '../vmm/metadata.js';
import { fillRamCharged } from '../vmm/ram-fill.js';
import { adoptOldSleepState, ensureRecordsDir } from '../vmm/records.js';
import { writeSecretsDisk } from '../vmm/secrets-disk.js';
import {
  BOOT_TIMEOUT_MS,
  DRAIN_TIMEOUT_MS,
  dataDiskPath,
  guestImage,
  hasSleepState,
  instanceDir,
  instanceLayout,
  killVm,
  launchVm,
  liveRamPath,
  networkDir,
  prepareVmGroups,
  removeSleepState,
  rootDiskPath,
  type Started,
  settleVm,
  sleepRecordsDir,
  sleepStatePath,
  stopVm,
  type VmContext,
  type VmLayout,
  withVm,
} from '../vmm/vm.js';
import { type BaseSnapshot, findBase } from './base.js';
import { type DeltaInfo, deltaInfo, reserveRam, writeDelta } from './delta.js';

/**
 * Start from the pool's base snapshot; sleep and wake as deltas of it. A sleep state is
 * `sleep/state` in the instance folder (device state only: RAM travels apart, x-ignore-shared;
 * written by the VMM, and read only by the next VMM) plus vmkit's part in the records folder,
 * `sleep/ram.delta` (the guest pages that differ from the base's RAM, see delta.ts: vmkit writes
 * and applies it as root, so the VMM must not be able to touch it) and `sleep/base.json` (which
 * base). The data disk, the instance's own overlay, stays where it is. `base.json` is written
 * last, so its presence means the sleep state is whole (hasSleepState).
 */

/** Written by wake inside the guest: when it last woke from sleep. */
export const WOKE_FILE = '/run/vmkit/woke';
const SAVE_TIMEOUT_MS = 300_000;

/** The RAM pages of a sleep state that differ from its base (delta.ts). */
export const sleepDeltaPath = (dir: string) => join(sleepRecordsDir(dir), 'ram.delta');
const sleepBasePath = (dir: string) => join(sleepRecordsDir(dir), 'base.json');

/** Writes the instance's secrets disk afresh (its tenant's secrets now); the names are audited. */
function provideSecrets(ctx: VmContext, instance: Instance, tenant: Tenant): void {
  writeSecretsDisk(instanceDir(ctx.fleetDir, instance.seq), tenant.secrets);
  const names = Object.keys(tenant.secrets);
  if (names.length === 0) return;
  audit(ctx.fleetDir, {
    tenant: tenant.id,
    action: 'secret.disk',
    target: instance.path,
    outcome: 'ok',
    detail: `secrets disk written: ${names.join(', ')}`,
  });
}

/**
 * Starts the layout's VMM on a fresh RAM file while that file is filled from the base (and a
 * delta): QEMU maps guest RAM at start-up but reads none of it before the incoming migration,
 * so the two overlap. Resolves once both are done; on a failure of either the VMM is ended.
 */
async function launchOnRam(
  ctx: VmContext,
  { layout, instance, pool, tenant }: { layout: VmLayout; instance: Instance; pool: Pool; tenant: Tenant },
  image: BootImage,
  base: BaseSnapshot,
  timer: StepTimer,
  delta?: string,
): Promise<DetachedRecord> {
  reserveRam(base.ram, liveRamPath(layout.dir));
  writeMetadataDocument(layout.dir, instance, pool, tenant, layout.uid);
  // Made first, so that the RAM copy counts against the VMM's memory limit, not vmkit's.
  const groups = prepareVmGroups(layout.dir, pool);
  const started = performance.now();
  const took = () => Math.round(performance.now() - started);
  let ramMs = 0;
  let qemuMs = 0;
  const [launched, filled] = await Promise.allSettled([
    launchVm(ctx, layout, pool, image, true, [base.dir]).finally(() => {
      qemuMs = took();
    }),
    fillRamCharged(groups, base.ram, liveRamPath(layout.dir), delta).finally(() => {
      ramMs = took();
    }),
  ]);
  if (launched.status === 'rejected' || filled.status === 'rejected') {
    await killVm(layout.dir);
    throw launched.status === 'rejected' ? launched.reason : (filled as PromiseRejectedResult).reason;
  }
  timer.step(
    `QEMU up (${qemuMs} ms) while the RAM file was ${delta ? 'rebuilt from base and delta' : 'copied from the base'} (${ramMs} ms)`,
  );
  return launched.value;
}

/** The instance's base, which it runs on or sleeps as a delta of. */
export function instanceBase(fleetDir: string, instance: Instance, pool: Pool): BaseSnapshot {
  const base = findBase(fleetDir, pool, instance.revision);
  if (!base) {
    throw new SnapshotError(
      `instance ${instance.path}: the base snapshot of pool ${pool.tenant}/${pool.id} revision ${instance.revision} is gone`,
    );
  }
  return base;
}

/** What the sleep state of an instance folder holds, for `instance info` and the benchmark. */
export function sleepStateInfo(
  dir: string,
): (DeltaInfo & { deviceStateBytes: number; dataDiskBytes: number }) | undefined {
  if (!hasSleepState(dir)) return undefined;
  const disk = existsSync(dataDiskPath(dir)) ? lstatSync(dataDiskPath(dir)).blocks * 512 : 0;
  return {
    ...deltaInfo(sleepDeltaPath(dir)),
    deviceStateBytes: lstatSync(sleepStatePath(dir)).size,
    dataDiskBytes: disk,
  };
}

/**
 * Starts the instance from its pool's base snapshot (made first if the pool has none for its
 * revision): the base's RAM copied into a RAM file of the instance's own, the base's device
 * state loaded, then the guest given the instance's hostname, address and MAC, a fresh clock
 * and entropy, and told to forget cached disk blocks (the base saw a blank data disk).
 */
export async function bootVm(
  ctx: VmContext,
  instance: Instance,
  pool: Pool,
  base: BaseSnapshot,
  tenant: Tenant,
): Promise<Started> {
  const image = await guestImage(ctx, base.revision, pool, `the base of pool ${pool.tenant}/${pool.id}`);
  await ensureSwitchDaemon(networkDir(ctx.fleetDir, instance.tenant), instance.tenant);
  const layout = instanceLayout(ctx, instance, tenant);
  rmSync(join(layout.dir, 'console.log'), { force: true });
  const timer = stepTimer(ctx.log, `start of ${instance.path}`, 'start');
  provideSecrets(ctx, instance, tenant);
  if (image.disk) {
    // Made in the records, then renamed in: qemu-img would write through a link left in the folder.
    const made = join(ensureRecordsDir(layout.dir), 'root.qcow2');
    rmSync(made, { force: true });
    await createQcow2(made, { base: rootDiskPath(base.dir) });
    renameSync(made, rootDiskPath(layout.dir));
  }
  const record = await launchOnRam(ctx, { layout, instance, pool, tenant }, image, base, timer);
  try {
    const warnings = await settleVm(ctx, layout.dir, record, pool);
    await withVm(layout.dir, instance.path, async (vm) => {
      await vm.readState(base.state, { ramShared: true, timeoutMs: SAVE_TIMEOUT_MS });
      timer.step('base state loaded');
      const profile = profileNamed(image.profile);
      await setUpRestoredGuest(
        await vm.agent(BOOT_TIMEOUT_MS, RESTORED_AGENT_BANNER_WAIT_MS),
        profile,
        {
          clockSeconds: Math.floor(Date.now() / 1000),
          hostname: instance.id,
          entropyHex: randomBytes(64).toString('hex'),
          machineId: newMachineId(),
          renumber: [{ index: 0, address: instance.address, mac: instance.mac }],
          hosts: {},
        },
        {
          what: 'guest set-up after start',
          name: instance.path,
          consoleTail: () => vm.consoleTail(),
          afterwards: profile.commands.dropCaches(),
        },
      );
      timer.step('guest set up');
    });
    return { record, warnings, steps: timer.summary() };
  } catch (error) {
    await killVm(layout.dir);
    throw error;
  }
}

/**
 * Saves the paused guest's device state and the RAM pages that differ from its base, then ends
 * the VMM. A crash leaves either a whole sleep state or none.
 */
export async function sleepVm(
  ctx: VmContext,
  instance: Instance,
  pool: Pool,
  tenant: Tenant,
): Promise<{ delta: DeltaInfo; steps: string }> {
  const dir = instanceDir(ctx.fleetDir, instance.seq);
  const base = instanceBase(ctx.fleetDir, instance, pool);
  const state = sleepStatePath(dir);
  // vmkit's part first: without its marker no half-written state counts. The VMM's folder runs
  // on meanwhile, so nothing in it is removed: its `sleep/` is made (or kept) for the VMM to write.
  removeSleepState(dir, false);
  mkdirSync(join(ensureRecordsDir(dir), 'sleep'), { mode: 0o700 });
  ensureDirSync(join(dir, 'sleep'), 0o700);
  const uid = vmmUid(tenant, ctx.runtime);
  if (uid !== undefined) lchownSync(join(dir, 'sleep'), uid, uid); // the jailed VMM writes its state there
  const timer = stepTimer(ctx.log, `sleep of ${instance.path}`, 'sleep');
  await withVm(dir, instance.path, async (vm) => {
    // Saved attached and idle, the restored agent reads requests at once. Cached blocks (of
    // the secrets disk among them) are dropped first, so that the sleep state holds fewer.
    // A Warm instance runs on for that moment: a paused guest cannot answer.
    if ((await vm.status()) === 'paused') await vm.resume();
    // Its turn on the agent waits for the commands in flight (new ones are refused by now).
    const agent = await vm.agent(DRAIN_TIMEOUT_MS);
    // The image is not looked up for a sleep: every fleet image has a POSIX shell.
    await agent.run(posixCommands.dropCaches(), 30_000);
    await vm.pause();
    await vm.writeState(state, {
      ramShared: true,
      timeoutMs: SAVE_TIMEOUT_MS,
      what: `sleep of ${instance.path}`,
    });
  });
  timer.step('device state saved');
  const delta = await writeDelta(liveRamPath(dir), base.ram, sleepDeltaPath(dir));
  timer.step(`RAM delta written (${delta.pages} pages)`);
  writeSleepMarker(dir, { id: base.id, revision: base.revision, address: instance.address });
  timer.step('sleep state complete');
  await stopVm(dir, instance.path, ctx.log);
  timer.step('VMM ended');
  return { delta, steps: timer.summary() };
}

/**
 * vmkit's marker of a whole sleep state (written last, through a rename): the base it is a delta
 * of, and the address the guest had when it slept (another node's, for an instance that moved).
 */
export interface SleepMarker {
  id: string;
  revision: string;
  address?: string;
}

export function writeSleepMarker(dir: string, marker: SleepMarker): void {
  writeFileSync(`${sleepBasePath(dir)}.part`, JSON.stringify(marker), { mode: PRIVATE_FILE });
  renameSync(`${sleepBasePath(dir)}.part`, sleepBasePath(dir));
}

/**
 * Refreshes a woken guest's clock and entropy and tells it that it woke (WOKE_FILE); a guest that
 * slept under another address (it moved from another node) is given the instance's.
 */
async function setUpAfterWake(
  vm: AttachedVmm,
  image: BootImage,
  bannerWaitMs = RESTORED_AGENT_BANNER_WAIT_MS,
  renumber: Array<{ index: number; address: string; mac: string }> = [],
): Promise<void> {
  const now = Math.floor(Date.now() / 1000);
  await setUpRestoredGuest(
    await vm.agent(BOOT_TIMEOUT_MS, bannerWaitMs),
    profileNamed(image.profile),
    { clockSeconds: now, entropyHex: randomBytes(64).toString('hex'), renumber, hosts: {} },
    {
      what: 'guest set-up after wake',
      name: vm.name,
      consoleTail: () => vm.consoleTail(),
      // A shell builtin (the agent made /run/vmkit at its start): every fork in a VMM this new
      // costs guest code translated afresh. No page cache to drop: sleep dropped it before saving.
      afterwards: `echo ${now} > ${shellQuote(WOKE_FILE)}`,
    },
  );
}

/**
 * Completes a wake that was cut off after its guest resumed (repair): the guest set-up is done
 * again (it is idempotent: clock, entropy, WOKE_FILE) and the stale sleep state removed.
 */
export async function finishWake(ctx: VmContext, instance: Instance, pool: Pool): Promise<void> {
  const dir = instanceDir(ctx.fleetDir, instance.seq);
  try {
    const image = await guestImage(ctx, instance.revision, pool, `instance ${instance.path}`);
    // The cut-off call may have left the agent mid-request: wait for it as after a restart.
    await withVm(dir, instance.path, (vm) => setUpAfterWake(vm, image, undefined));
  } finally {
    removeSleepState(dir, false); // its VMM runs: only vmkit's part (the marker) goes now
  }
}

/**
 * Restores the instance from its base plus its delta into a new detached VMM, then refreshes
 * the guest's clock and entropy and tells it that it woke (WOKE_FILE).
 */
export async function wakeVm(
  ctx: VmContext,
  instance: Instance,
  pool: Pool,
  tenant: Tenant,
): Promise<Started> {
  const layout = instanceLayout(ctx, instance, tenant);
  const { dir } = layout;
  const state = sleepStatePath(dir);
  adoptOldSleepState(dir);
  if (!hasSleepState(dir)) throw new SnapshotError(`instance ${instance.path} has no sleep state in ${dir}`);
  const base = instanceBase(ctx.fleetDir, instance, pool);
  const slept = JSON.parse(readFileSync(sleepBasePath(dir), 'utf8')) as SleepMarker;
  if (slept.id !== base.id) {
    throw new SnapshotError(
      `instance ${instance.path} slept as a delta of base ${slept.id}, but the pool's base for its revision is ${base.id} now`,
    );
  }
  const timer = stepTimer(ctx.log, `wake of ${instance.path}`, 'wake');
  const image = await guestImage(ctx, instance.revision, pool, `instance ${instance.path}`);
  await ensureSwitchDaemon(networkDir(ctx.fleetDir, instance.tenant), instance.tenant);
  provideSecrets(ctx, instance, tenant);
  timer.step('image, switch and secrets disk ready');
  const record = await launchOnRam(
    ctx,
    { layout, instance, pool, tenant },
    image,
    base,
    timer,
    sleepDeltaPath(dir),
  );
  try {
    const warnings = await settleVm(ctx, dir, record, pool);
    timer.step('limits applied');
    await withVm(dir, instance.path, async (vm) => {
      await vm.readState(state, { ramShared: true, timeoutMs: SAVE_TIMEOUT_MS });
      timer.step('device state loaded');
      const moved = slept.address !== undefined && slept.address !== instance.address;
      await setUpAfterWake(
        vm,
        image,
        undefined,
        moved ? [{ index: 0, address: instance.address, mac: instance.mac }] : [],
      );
      timer.step(moved ? `guest set up, renumbered from ${slept.address}` : 'guest set up');
    });
    // Only now: from the moment the guest ran, the sleep state is stale (the guest may have
    // written its data disk since), and repair finishes a wake whose guest runs instead of
    // going back to it. Removed under the intent, so no later sleep's state can be the one removed.
    removeSleepState(dir, false); // its VMM runs: only vmkit's part (the marker) goes now
    timer.step('sleep state removed');
    return { record, warnings, steps: timer.summary() };
  } catch (error) {
    await killVm(dir);
    throw error;
  }
}

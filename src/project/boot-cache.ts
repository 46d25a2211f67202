import { randomBytes } from 'node:crypto';
import { existsSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { GuestSetupError, VmkitError } from '../errors.js';
import type { BootImage } from '../images/types.js';
import { stableMachineId } from '../machine/identity.js';
import type { MachineOptions } from '../machine/options.js';
import { resolveMachine } from '../machine/start.js';
import { startMachine } from '../machines.js';
import { BOOT_CONSOLE, bootCacheId, bootCacheRefusal, usableEntry } from '../snapshot/boot-cache.js';
import type { Snapshot } from '../snapshot/snapshot.js';
import { runTool } from '../util/exec.js';
import { killPoint } from '../util/kill-point.js';
import { isMediaBoot } from './media.js';
import { setUpRestoredVm } from './restored.js';
import { dataDisk, rootDisk, writeFileAtomic } from './state.js';
import { BOOT_TIMEOUT_MS, imageRecordPath, launchVmm, type ProjectVm, stopHub, stopVmm } from './vmm.js';
import { projectVmms } from './vmms.js';

/**
 * A fresh project VM (no data disk yet) starts from the boot cache, as startMachine does: its
 * first boot is the same configuration as a machine with the project VM's image, memory, CPUs and
 * data disk, so both share one entry. On a miss that machine is booted once (which saves the
 * entry); the project VM's detached QEMU then loads the entry, gets copies of its disks and its
 * own identity (hostname, machine ID, clock, entropy), and goes on as a booted one would.
 */

/** The startMachine options whose boot is the project VM's first boot. */
function machineOptions(pvm: ProjectVm, image: BootImage, log: (line: string) => void): MachineOptions {
  return {
    name: pvm.vm.name,
    image,
    memoryMiB: pvm.vm.memoryMiB,
    cpus: pvm.vm.cpus,
    disks: [{ sizeMiB: pvm.vm.diskMiB }],
    runtime: pvm.runtime,
    timeoutMs: BOOT_TIMEOUT_MS,
    log: (line) => log(line.startsWith('boot cache:') ? line : `boot cache: ${line}`),
  };
}

/**
 * Starts a fresh project VM from the boot cache entry of its configuration: true when it runs,
 * its hub serving and its identity given; false when it must boot (told why through `log`).
 */
export async function upFromBootCache(
  pvm: ProjectVm,
  image: BootImage,
  ports: Record<string, number>,
  log: (line: string) => void,
): Promise<boolean> {
  if (isMediaBoot(image) || image.profile === 'foreign') return false;
  const options = machineOptions(pvm, image, log);
  const resolved = await resolveMachine(options);
  const refusal = bootCacheRefusal(options, resolved);
  if (refusal) {
    log(`boot cache: not used (${refusal}); booting`);
    return false;
  }
  const id = await bootCacheId(resolved);
  let entry = await usableEntry(id, resolved, log);
  if (!entry) {
    log(`boot cache: no entry ${id} yet; booting this configuration once to save it`);
    const machine = await startMachine(options);
    await machine.close();
    entry = await usableEntry(id, resolved, log);
    if (!entry) {
      log(`boot cache: entry ${id} was not saved; booting`);
      return false;
    }
  }
  const problem = misfit(entry, image);
  if (problem) {
    log(`boot cache: entry ${id} does not fit this VM (${problem}); booting`);
    return false;
  }
  try {
    await restoreEntry(pvm, image, entry, ports);
  } catch (error) {
    if (!(error instanceof VmkitError)) throw error;
    await stopHub(pvm);
    await stopVmm(pvm);
    rmSync(dataDisk(pvm.dir), { force: true });
    rmSync(rootDisk(pvm.dir), { force: true });
    log(`boot cache: restoring entry ${id} failed, booting instead: ${error.message}`);
    return false;
  }
  log(`boot cache: VM ${pvm.vm.name} restored from ${id}`);
  return true;
}

/** Why an entry cannot be a project VM's start: its disks must be the root overlay and the data disk. */
function misfit(entry: Snapshot, image: BootImage): string | undefined {
  const { manifest } = entry;
  const expected = image.disk ? 2 : 1;
  if (manifest.identity.disks.length !== expected)
    return `${manifest.identity.disks.length} disks, not ${expected}`;
  if (manifest.ramInStream) return 'its RAM is in its state stream';
  return undefined;
}

async function restoreEntry(
  pvm: ProjectVm,
  image: BootImage,
  entry: Snapshot,
  ports: Record<string, number>,
): Promise<void> {
  const disks = [...(image.disk ? [rootDisk(pvm.dir)] : []), dataDisk(pvm.dir)];
  for (const [index, disk] of disks.entries()) {
    const partial = `${disk}.restoring-${randomBytes(3).toString('hex')}`;
    await runTool('cp', ['--sparse=always', join(entry.dir, `disk${index}.qcow2`), partial], {
      timeoutMs: 600_000,
    });
    renameSync(partial, disk);
  }
  if (image.disk) writeFileAtomic(imageRecordPath(pvm.dir), JSON.stringify({ key: image.key }));
  // Copy-on-write: the guest's RAM starts as the entry's pages and its writes stay its own.
  const history = join(entry.dir, BOOT_CONSOLE);
  await launchVmm(pvm, image, disks, ports, true, {
    ram: { path: join(entry.dir, 'ram'), share: false },
    ...(existsSync(history) ? { consoleHistory: history } : {}),
  });
  killPoint('up', 'QEMU started');
  const attached = await projectVmms().attach(pvm.vm.name, pvm.run);
  try {
    await attached.readState(join(entry.dir, 'state'), { ramShared: true, timeoutMs: 120_000 });
  } finally {
    attached.detach();
  }
  await setUpRestoredVm(pvm, image.profile, {
    clockSeconds: Math.floor(Date.now() / 1000),
    entropyHex: randomBytes(64).toString('hex'),
    hostname: pvm.vm.name,
    machineId: stableMachineId(pvm.dir),
    renumber: [],
    hosts: {},
  }).catch((error: Error) => {
    throw new GuestSetupError(`VM ${pvm.vm.name} was restored but its setup failed: ${error.message}`);
  });
  killPoint('up', 'agent answers');
}

/** A VM with no data disk yet has never run: its first up may start from the boot cache. */
export const isFreshVm = (pvm: ProjectVm) => !existsSync(dataDisk(pvm.dir));

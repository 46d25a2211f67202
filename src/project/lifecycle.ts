import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { GuestSetupError } from '../errors.js';
import { profileNamed } from '../guest/profiles/index.js';
import type { BootImage } from '../images/types.js';
import { stableMachineId } from '../machine/identity.js';
import { killPoint } from '../util/kill-point.js';
import { guestFilesDir } from '../util/paths.js';
import { shellQuote } from '../util/shell.js';
import { isFreshVm, upFromBootCache } from './boot-cache.js';
import { AgentLentError } from './hub-agent.js';
import type { HubClient } from './hub-client.js';
import { settleInterrupted, withIntent } from './intent.js';
import { isMediaBoot, needsInstall } from './media.js';
import { bootWithoutAgent, installFromIso, powerDown } from './media-boot.js';
import { hasAgent, isIsoImage, isMediaImage, toPattern } from './media-config.js';
import { assignPorts } from './ports.js';
import { listProjectSnapshots, takeSnapshot } from './snapshots.js';
import { authorizeAtUp } from './ssh.js';
import { DATA_MOUNT, dataDeviceOf, ensureVmDir, readState, withLock, writeState } from './state.js';
import {
  BOOT_TIMEOUT_MS,
  connectHub,
  consoleTail,
  dataDevice,
  HOST_NIC_ADDRESS,
  launchVmm,
  type ProjectVm,
  prepareDisks,
  projectVm,
  startHub,
  stopHub,
  stopVmm,
  vmImage,
  vmmRecord,
} from './vmm.js';

export type Log = (line: string) => void;
export { DATA_MOUNT } from './state.js';

const LOCK_WAIT_MS = 30_000;
/** How long a guest without vmkit's agent gets to power off by ACPI before QEMU is stopped. */
const POWER_DOWN_MS = 60_000;

const provisionHash = (commands: string[]) =>
  createHash('sha256').update(JSON.stringify(commands)).digest('hex').slice(0, 16);

/** Ports the project's other VMs hold, so that picks never clash inside one project. */
function otherVmPorts(pvm: ProjectVm): Set<number> {
  const taken = new Set<number>();
  for (const other of Object.values(pvm.project.vms)) {
    if (other.name === pvm.vm.name) continue;
    for (const port of Object.values(readState(projectVm(pvm.project, other, pvm.runtime).dir).ports))
      taken.add(port);
  }
  return taken;
}

/** Mounts the data disk at DATA_MOUNT (made the first time; nothing to do when mounted). */
async function mountData(hub: HubClient, device: string): Promise<void> {
  const mount = readFileSync(join(guestFilesDir(), 'project', 'mount-data.sh'), 'utf8');
  await hub.succeed(`set -- ${shellQuote(device)} ${DATA_MOUNT}\n${mount}`, 120_000);
}

async function guestSetupAfterBoot(pvm: ProjectVm, image: BootImage): Promise<void> {
  const profile = profileNamed(image.profile);
  const setup = profile.afterBoot({
    hostname: pvm.vm.name,
    nics: [],
    // No gateway: the VM has no way out (QEMU's user-mode network is restricted), as a machine has none.
    hostNic: { index: 0, address: HOST_NIC_ADDRESS },
    hosts: {},
    // Its own, the same at every boot of its disk.
    machineId: stableMachineId(pvm.dir),
  });
  const hub = await connectHub(pvm);
  try {
    await hub.succeed(setup, 60_000);
  } finally {
    hub.close();
  }
}

/** Mounts the data disk at the work folder and makes the synced folders (after a boot or a restore). */
async function prepareWork(hub: HubClient, pvm: ProjectVm, image: BootImage): Promise<void> {
  await mountData(hub, dataDevice(image));
  const folders = [pvm.vm.workdir, ...pvm.vm.sync.map((map) => map.guest)];
  await hub.succeed(`mkdir -p ${folders.map(shellQuote).join(' ')}`, 30_000);
}

/** Runs the config's provision commands when they changed since they last ran, output streaming. */
async function provision(hub: HubClient, pvm: ProjectVm, log: Log, force = false): Promise<boolean> {
  const state = readState(pvm.dir);
  const hash = provisionHash(pvm.vm.provision);
  if (!force && state.provisionHash === hash) return false;
  for (const command of pvm.vm.provision) {
    log(`provision: ${command}`);
    const result = await hub.run(command, 1_800_000);
    const output = `${result.stdout}${result.stderr}`.trim();
    if (output) log(output);
    if (result.status !== 0) {
      throw new GuestSetupError(`provision command failed (status ${result.status}): ${command}`);
    }
    killPoint('up', 'provision command done');
  }
  writeState(pvm.dir, { ...readState(pvm.dir), provisionHash: hash });
  return pvm.vm.provision.length > 0;
}

export interface UpResult {
  already: boolean;
  recovered?: string;
  bootMs: number;
  /** A fresh VM started from the boot cache's saved boot of its configuration. */
  fromBootCache?: boolean;
}

export interface UpOptions {
  /** Boot for real even when the boot cache holds this configuration's boot (`vmkit up --fresh`). */
  fresh?: boolean;
}

/**
 * Brings the VM up and returns when its agent answers, the data disk is mounted and
 * provisioning ran. A running VM is left alone; a VM whose QEMU died is reported and booted
 * again from its disks. The steps run under an `up` intent (intent.ts): an up cut off at any of
 * them is undone by the next command, and this one starts over.
 */
export async function up(pvm: ProjectVm, log: Log, options: UpOptions = {}): Promise<UpResult> {
  ensureVmDir(pvm.project.root, pvm.vm.name);
  return withLock(
    pvm.dir,
    'up',
    async () => {
      const start = performance.now();
      const settled = await settleInterrupted(pvm);
      if (settled) log(`VM ${pvm.vm.name}: ${settled}`);
      const state = readState(pvm.dir);
      let recovered: string | undefined;
      if (vmmRecord(pvm)) {
        if (!hasAgent(pvm.vm.image)) return { already: true, bootMs: 0 };
        return withIntent(pvm, 'provision', async () => {
          // Running: bring back a hub that died, and run provision commands changed since.
          const reachable = await connectHub(pvm).then(
            (hub) => {
              hub.close();
              return true;
            },
            () => false,
          );
          if (!reachable) await startHub(pvm, 5000);
          const hub = await connectHub(pvm);
          let provisioned: boolean;
          try {
            await mountData(hub, dataDeviceOf(pvm.dir)); // sync refuses without it
            provisioned = await provision(hub, pvm, log);
            await authorizeAtUp(hub, pvm, log);
          } finally {
            hub.close();
          }
          if (provisioned) await saveClean(pvm, log);
          return { already: true, bootMs: Math.round(performance.now() - start) };
        });
      }
      return withIntent(pvm, 'up', async () => {
        killPoint('up', 'begun');
        if (state.running) {
          recovered = consoleTail(pvm, 1500).trim() || '(the console log is empty)';
          log(`VM ${pvm.vm.name}: its QEMU died since it was started; console tail:\n${recovered}`);
          log(`VM ${pvm.vm.name}: booting it again from its disks`);
        }
        await stopHub(pvm);
        await stopVmm(pvm);
        // Before any disk is made: a refusal (a fixed host port taken) leaves nothing behind.
        const ports = await assignPorts(pvm.vm, state, otherVmPorts(pvm));
        const { image: media } = pvm.vm;
        if (isIsoImage(media) && needsInstall(pvm, media)) await installFromIso(pvm, media, log);
        const image = await vmImage(pvm, log);
        writeState(pvm.dir, { ...state, ports, running: false });
        const fromBootCache =
          !options.fresh && isFreshVm(pvm) && (await upFromBootCache(pvm, image, ports, log));
        const disks = await prepareDisks(pvm, image);
        try {
          let provisioned = false;
          if (fromBootCache) {
            provisioned = await readyForWork(pvm, image, log);
          } else if (isMediaBoot(image) && !hasAgent(media)) {
            const readyWhen = isMediaImage(media) && media.readyWhen ? toPattern(media.readyWhen) : undefined;
            await bootWithoutAgent(pvm, image, disks, ports, readyWhen, BOOT_TIMEOUT_MS);
            writeState(pvm.dir, { ...readState(pvm.dir), running: true, bootedAt: new Date().toISOString() });
          } else {
            await launchVmm(pvm, image, disks, ports, false);
            killPoint('up', 'QEMU started');
            await startHub(pvm, BOOT_TIMEOUT_MS);
            killPoint('up', 'agent answers');
            await guestSetupAfterBoot(pvm, image);
            provisioned = await readyForWork(pvm, image, log);
          }
          if (provisioned || !listProjectSnapshots(pvm).some((snapshot) => snapshot.label === 'clean')) {
            await saveClean(pvm, log);
          }
        } catch (error) {
          await stopHub(pvm);
          await stopVmm(pvm);
          writeState(pvm.dir, { ...readState(pvm.dir), running: false });
          throw error;
        }
        return {
          already: false,
          recovered,
          bootMs: Math.round(performance.now() - start),
          ...(fromBootCache ? { fromBootCache } : {}),
        };
      });
    },
    LOCK_WAIT_MS,
  );
}

/** A started VM with its identity: work mounted, marked up, provisioned, SSH keys authorized. */
async function readyForWork(pvm: ProjectVm, image: BootImage, log: Log): Promise<boolean> {
  const hub = await connectHub(pvm);
  try {
    await prepareWork(hub, pvm, image);
    writeState(pvm.dir, { ...readState(pvm.dir), running: true, bootedAt: new Date().toISOString() });
    killPoint('up', 'work mounted');
    const provisioned = await provision(hub, pvm, log);
    await authorizeAtUp(hub, pvm, log);
    return provisioned;
  } finally {
    hub.close();
  }
}

/** `clean` is the state right after provisioning: taken after the first boot and each provision run. */
async function saveClean(pvm: ProjectVm, log: Log): Promise<void> {
  const saved = await takeSnapshot(pvm, 'clean');
  log(
    `VM ${pvm.vm.name}: saved snapshot clean (${(saved.bytes / 1048576).toFixed(1)} MiB; vmkit reset returns to it)`,
  );
}

/** Runs the provision commands again now (they also run when their text changes), then saves clean. */
export async function reprovision(pvm: ProjectVm, log: Log): Promise<void> {
  await withLock(
    pvm.dir,
    'provision',
    async () => {
      const settled = await settleInterrupted(pvm);
      if (settled) log(`VM ${pvm.vm.name}: ${settled}`);
      await withIntent(pvm, 'provision', async () => {
        const hub = await connectHub(pvm);
        try {
          await provision(hub, pvm, log, true);
        } finally {
          hub.close();
        }
        await saveClean(pvm, log);
      });
    },
    LOCK_WAIT_MS,
  );
}

/** Stops the VM cleanly: the data disk is flushed and unmounted, then QEMU quits. */
export async function down(pvm: ProjectVm): Promise<boolean> {
  ensureVmDir(pvm.project.root, pvm.vm.name);
  return withLock(
    pvm.dir,
    'down',
    async () => {
      await settleInterrupted(pvm);
      const wasRunning = vmmRecord(pvm) !== undefined;
      if (wasRunning && !hasAgent(pvm.vm.image)) await powerDown(pvm, POWER_DOWN_MS);
      else if (wasRunning) {
        const hub = await connectHub(pvm).catch(() => undefined);
        try {
          await hub?.run(`sync; umount ${DATA_MOUNT} 2>/dev/null; sync`, 30_000);
        } catch (error) {
          // A Machine that holds the agent may be writing /work: stop nothing under it.
          if (error instanceof AgentLentError) throw error;
        } finally {
          hub?.close();
        }
      }
      await stopHub(pvm);
      await stopVmm(pvm);
      writeState(pvm.dir, { ...readState(pvm.dir), running: false });
      return wasRunning;
    },
    LOCK_WAIT_MS,
  );
}

/** Stops the VM and removes its folder: disks, snapshots, state. */
export async function destroy(pvm: ProjectVm): Promise<void> {
  await withLock(
    ensureVmDir(pvm.project.root, pvm.vm.name),
    'destroy',
    async () => {
      await stopHub(pvm);
      await stopVmm(pvm);
      const doomed = `${pvm.dir}.destroying-${randomBytes(4).toString('hex')}`;
      rmSync(pvm.run, { recursive: true, force: true });
      // Renamed first, so that a crash mid-removal never leaves a half VM under its name.
      renameSync(pvm.dir, doomed);
      rmSync(doomed, { recursive: true, force: true });
    },
    LOCK_WAIT_MS,
  );
}

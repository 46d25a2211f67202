import { copyFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { chooseAccel } from '../backends/accel.js';
import { stripAnsi } from '../console/serial.js';
import { MachineCrashedError, tail } from '../errors.js';
import { buildImage } from '../images/build.js';
import type { BootImage } from '../images/types.js';
import {
  type DetachedRecord,
  isRunning,
  processesNaming,
  readRecord,
  spawnDetached,
  stopDetached,
  waitForExit,
} from '../runtime/detached.js';
import { SHARED_MEMORY_DIR } from '../runtime/runtime.js';
import { createQcow2 } from '../util/qcow2.js';
import { sleep } from '../util/time.js';
import { hubLogPath, hubRecordPath, hubSocket } from './hub-protocol.js';
import { firmwareBoot, isMediaBoot, mediaBootImage } from './media.js';
import { isMediaImage } from './media-config.js';
import { dataDisk, readJson, rootDisk, writeFileAtomic } from './state.js';
import { type ProjectVm, vmmRecord } from './vm-handle.js';
import { projectVmms } from './vmms.js';

export { rootDisk } from './state.js';
export { connectHub, type ProjectVm, projectVm, VmDownError, vmmRecord } from './vm-handle.js';

export const BOOT_TIMEOUT_MS = 180_000;
export const imageRecordPath = (dir: string) => join(dir, 'image.json');

/** The end of the VM's serial console, escape sequences removed. */
export function consoleTail(pvm: ProjectVm, chars = 2000): string {
  try {
    return tail(
      stripAnsi(readFileSync(projectVmms().consoleLogPath(pvm.run), 'utf8')).replace(/\r/g, ''),
      chars,
    );
  } catch {
    return '';
  }
}

/** The image the VM boots: built (or found in the cache) from its config, then kept by key. */
export async function vmImage(pvm: ProjectVm, log: (line: string) => void): Promise<BootImage> {
  const { image } = pvm.vm;
  if (isMediaImage(image)) return mediaBootImage(pvm, image);
  const recipe = image.endsWith('.json')
    ? JSON.parse(readFileSync(join(pvm.project.root, image), 'utf8'))
    : image;
  return buildImage(recipe, { runtime: pvm.runtime, onProgress: (line) => log(`image: ${line}`) });
}

/** The VM's disks in guest order: the image's root overlay (Debian) first, then the data disk. */
export async function prepareDisks(pvm: ProjectVm, image: BootImage): Promise<string[]> {
  const disks: string[] = [];
  if (image.disk) {
    const recorded = readJson<{ key: string }>(imageRecordPath(pvm.dir));
    if (!existsSync(rootDisk(pvm.dir)) || recorded?.key !== image.key) {
      const baseFormat = isMediaBoot(image) ? image.diskFormat : 'qcow2';
      await createQcow2(rootDisk(pvm.dir), { base: image.disk, baseFormat });
      writeFileAtomic(imageRecordPath(pvm.dir), JSON.stringify({ key: image.key }));
    }
    disks.push(rootDisk(pvm.dir));
  }
  if (!existsSync(dataDisk(pvm.dir))) {
    await createQcow2(dataDisk(pvm.dir), { sizeMiB: pvm.vm.diskMiB });
  }
  disks.push(dataDisk(pvm.dir));
  return disks;
}

/** The guest device of the data disk: after the root disk when the image has one. */
export const dataDevice = (image: BootImage) => (image.disk ? '/dev/vdb' : '/dev/vda');
const HOST_NIC_MAC = '52:54:00:12:34:56';
export const HOST_NIC_ADDRESS = '10.0.2.15/24';

/**
 * Starts the VM's QEMU detached, with its forwards; `incoming` waits for a saved state. Media
 * VMs boot through the firmware, from `cdrom` first when given; `paused` starts with the CPUs
 * stopped (QMP `cont` runs them), so that nothing on the console is missed. `ram`: a saved RAM
 * file to map (a boot cache entry's), instead of a new one; `consoleHistory`: a file whose text
 * starts the console log (the boot a restored state comes from).
 */
export async function launchVmm(
  pvm: ProjectVm,
  image: BootImage,
  disks: string[],
  ports: Record<string, number>,
  incoming: boolean,
  media: {
    cdrom?: string;
    paused?: boolean;
    ram?: { path: string; share: boolean };
    consoleHistory?: string;
  } = {},
): Promise<DetachedRecord> {
  const accel = await chooseAccel('auto', pvm.runtime);
  const memory = join(
    existsSync(SHARED_MEMORY_DIR) ? SHARED_MEMORY_DIR : pvm.run,
    `vmkit-project-${process.pid}.ram`,
  );
  rmSync(projectVmms().consoleLogPath(pvm.run), { force: true });
  if (media.consoleHistory) {
    copyFileSync(media.consoleHistory, projectVmms().consoleLogPath(pvm.run));
  }
  let record: DetachedRecord;
  try {
    record = await projectVmms().launch({
      name: `${pvm.vm.name}`,
      stateDir: pvm.run,
      ...(isMediaBoot(image)
        ? { boot: firmwareBoot(pvm, image.firmware, media.cdrom) }
        : { kernel: image.kernel, initrd: image.initrd, cmdline: image.cmdline }),
      ...(media.paused ? { paused: true } : {}),
      memoryMiB: pvm.vm.memoryMiB,
      cpus: pvm.vm.cpus,
      accel: accel.accel,
      nics: [],
      hostNic: { mac: HOST_NIC_MAC, internet: false, services: [] },
      memory: media.ram ?? { path: memory, share: false },
      disks,
      incoming,
      startTimeoutMs: 30_000,
    });
  } finally {
    if (!media.ram) rmSync(memory, { force: true }); // mapped by QEMU by now, or never to be
  }
  const attached = await projectVmms().attach(pvm.vm.name, pvm.run);
  try {
    for (const [guest, host] of Object.entries(ports)) {
      await attached.addPortForward(Number(host), Number(guest)).catch((error: Error) => {
        throw new MachineCrashedError(
          pvm.vm.name,
          `forwarding host port ${host} to guest port ${guest}: ${error.message}`,
          '',
        );
      });
    }
  } catch (error) {
    attached.detach();
    await stopDetached(record, 0);
    throw error;
  }
  attached.detach();
  return record;
}

function hubEntry(): { program: string; args: string[] } {
  const js = new URL('./hub-main.js', import.meta.url).pathname;
  const entry = existsSync(js) ? js : js.replace(/\.js$/, '.ts');
  const loader = entry.endsWith('.ts') ? ['--import', 'tsx'] : [];
  return { program: process.execPath, args: [...loader, entry] };
}

/**
 * Starts the VM's agent hub (detached) and waits until it serves. `bannerWaitMs`: how long the
 * agent's banner may take (a boot's); 0 for a restored guest saved with a host attached, whose
 * agent reads a request at once.
 */
export async function startHub(pvm: ProjectVm, bannerWaitMs: number): Promise<void> {
  await stopHub(pvm);
  const entry = hubEntry();
  const record = spawnDetached({
    program: entry.program,
    args: [...entry.args, pvm.run, pvm.vm.name, String(bannerWaitMs)],
    logPath: hubLogPath(pvm.run),
    recordPath: hubRecordPath(pvm.run),
    marker: pvm.run,
  });
  const deadline = Date.now() + bannerWaitMs + 30_000;
  while (!existsSync(hubSocket(pvm.run))) {
    const hubLog = () => tail(readFileSafe(hubLogPath(pvm.run)), 1500);
    if (!isRunning(record)) {
      throw new MachineCrashedError(pvm.vm.name, `the agent hub exited: ${hubLog()}`, consoleTail(pvm));
    }
    if (!vmmRecord(pvm)) {
      await stopDetached(record, 0);
      throw new MachineCrashedError(pvm.vm.name, 'QEMU exited while the guest booted', consoleTail(pvm));
    }
    if (Date.now() > deadline) {
      await stopDetached(record, 0);
      throw new MachineCrashedError(
        pvm.vm.name,
        `the guest agent did not answer within ${bannerWaitMs + 30_000} ms`,
        consoleTail(pvm),
      );
    }
    await sleep(50);
  }
}

const readFileSafe = (path: string) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
};

export async function stopHub(pvm: ProjectVm): Promise<void> {
  const recorded = readRecord(hubRecordPath(pvm.run));
  if (isRunning(recorded)) await stopDetached(recorded, 2000);
  // A hub whose start was cut off before its record was written.
  for (const stray of processesNaming(pvm.run)) {
    if (!readFileSafe(`/proc/${stray.pid}/cmdline`).includes('hub-main')) continue;
    await stopDetached(stray, 2000);
  }
  rmSync(hubSocket(pvm.run), { force: true });
}

/** Ends the VMM: asked to quit, SIGKILL if it lingers; then any other VMM of its folder. */
export async function stopVmm(pvm: ProjectVm): Promise<void> {
  const record = vmmRecord(pvm);
  if (record) {
    const attached = await projectVmms()
      .attach(pvm.vm.name, pvm.run)
      .catch(() => undefined);
    await attached?.quit();
    attached?.detach();
    if (!(await waitForExit(record, 5000))) await stopDetached(record, 0);
  }
  for (const stray of projectVmms().processesIn(pvm.run)) await stopDetached(stray, 0);
  rmSync(projectVmms().files(pvm.run).record, { force: true });
}

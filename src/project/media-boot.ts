import { renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { AttachedVmm } from '../backends/detached.js';
import { runConsoleScript } from '../console/script.js';
import { SerialConsole } from '../console/serial.js';
import { InterruptedError, MachineCrashedError, tail } from '../errors.js';
import { waitForExit } from '../runtime/detached.js';
import { createQcow2 } from '../util/qcow2.js';
import {
  checkedMedia,
  imageField,
  installedDisk,
  installKey,
  installRecordPath,
  type MediaBootImage,
} from './media.js';
import { type IsoImageConfig, installSteps } from './media-config.js';
import { writeFileAtomic } from './state.js';
import { imageRecordPath, launchVmm, type ProjectVm, rootDisk, stopVmm, vmmRecord } from './vmm.js';
import { projectVmms } from './vmms.js';

export const installConsoleLog = (pvm: ProjectVm) => join(pvm.dir, 'install-console.log');

/**
 * Installs the VM's OS from its ISO: QEMU boots the ISO with an empty disk attached, the
 * install steps run on the serial console, and the installer powers off (or reboots: the VMM
 * ends either way). The disk is written beside its place and renamed into it only then, so an
 * install cut short leaves nothing that looks installed; the next `up` starts it over.
 */
export async function installFromIso(
  pvm: ProjectVm,
  image: IsoImageConfig,
  log: (line: string) => void,
): Promise<void> {
  const name = pvm.vm.name;
  const steps = installSteps(image, pvm.project.root, imageField(pvm));
  const iso = (await checkedMedia(pvm, { iso: image.iso }, image.firmware)).files.iso as string;
  const target = installedDisk(pvm.dir);
  const partial = `${target}.installing`;
  await stopVmm(pvm);
  // A new base: the root overlay of an earlier install is meaningless on it.
  for (const stale of [partial, installRecordPath(pvm.dir), rootDisk(pvm.dir), imageRecordPath(pvm.dir)]) {
    rmSync(stale, { force: true });
  }
  await createQcow2(partial, { sizeMiB: image.diskMiB });
  const installer: MediaBootImage = {
    name: `installer:${image.iso}`,
    key: 'installer',
    dir: '',
    kernel: '',
    initrd: '',
    cmdline: '',
    kernelRelease: '',
    profile: 'foreign',
    disk: partial,
    diskFormat: 'qcow2',
    firmware: image.firmware,
  };
  log(`VM ${name}: installing from ${image.iso} onto a ${image.diskMiB} MiB disk`);
  const started = performance.now();
  let watched: Watched | undefined;
  // Ctrl-C or a kill mid-install: the install stops at once, and the catch below leaves no QEMU
  // and no half-installed disk behind; the caller decides how the process ends.
  let interrupted: InterruptedError | undefined;
  let stop: (error: InterruptedError) => void = () => {};
  const interruption = new Promise<never>((_, reject) => {
    stop = reject;
  });
  interruption.catch(() => {});
  const abandon = (signal: 'SIGINT' | 'SIGTERM') => {
    interrupted = new InterruptedError(signal, `installing VM ${name} from ${image.iso}`);
    watched?.close();
    stop(interrupted);
  };
  let launching: Promise<Watched> | undefined;
  process.once('SIGINT', abandon).once('SIGTERM', abandon);
  try {
    launching = launchWatched(pvm, installer, [partial], {}, installConsoleLog(pvm), iso);
    watched = await Promise.race([launching, interruption]);
    const { serial, poweredOff } = watched;
    const script = runConsoleScript({ name, console: serial }, steps, {
      log: (line) => log(`install: ${line}`),
    });
    script.catch(() => {}); // when interrupted, its failure is not the one reported
    await Promise.race([script, interruption]);
    const left = Math.max(1000, image.installTimeoutMs - (performance.now() - started));
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      poweredOff.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), left);
      }),
      interruption,
    ]);
    clearTimeout(timer);
    if (!done) {
      throw new MachineCrashedError(
        name,
        `the installer did not power off within ${image.installTimeoutMs} ms of booting (installTimeoutMs)`,
        tail(serial.log, 2000),
      );
    }
    watched.close();
    watched = undefined;
    await stopVmm(pvm);
    renameSync(partial, target);
    writeFileAtomic(
      installRecordPath(pvm.dir),
      JSON.stringify({ key: installKey(pvm, image), installedAt: new Date().toISOString() }),
    );
    log(`VM ${name}: installed in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } catch (error) {
    // A launch under way when the signal came is let finish, so that stopVmm finds its QEMU.
    if (interrupted && !watched) watched = await launching?.catch(() => undefined);
    // QEMU serves one QMP client at a time: let go of ours, so that stopVmm can ask it to quit.
    watched?.close();
    watched = undefined;
    await stopVmm(pvm);
    rmSync(partial, { force: true });
    if (interrupted) throw interrupted;
    if (error instanceof MachineCrashedError) throw error;
    throw new MachineCrashedError(
      name,
      `installing from ${image.iso} failed: ${(error as Error).message} (console log: ${installConsoleLog(pvm)})`,
      '',
    );
  } finally {
    process.off('SIGINT', abandon).off('SIGTERM', abandon);
    watched?.close();
  }
}

interface Watched {
  serial: SerialConsole;
  /** Resolves when the VMM ends (the guest powered off or rebooted). */
  poweredOff: Promise<void>;
  close(): void;
}

/** Launches the VM's QEMU paused, reads its serial console from the first byte, then runs it. */
async function launchWatched(
  pvm: ProjectVm,
  image: MediaBootImage,
  disks: string[],
  ports: Record<string, number>,
  logFile: string,
  cdrom?: string,
): Promise<Watched> {
  await launchVmm(pvm, image, disks, ports, false, { cdrom, paused: true });
  rmSync(logFile, { force: true });
  const serial = new SerialConsole(logFile);
  let attached: AttachedVmm | undefined;
  try {
    attached = await projectVmms().attach(pvm.vm.name, pvm.run);
    const socket = await attached.serialConsole();
    const poweredOff = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    serial.attach(socket);
    await attached.resume();
    const held = attached;
    return {
      serial,
      poweredOff,
      close: () => {
        held.detach();
        serial.close();
      },
    };
  } catch (error) {
    attached?.detach();
    serial.close();
    await stopVmm(pvm);
    throw error;
  }
}

/**
 * Boots a media VM whose guest has no vmkit agent: returns once `readyWhen` shows on its
 * console (or at once without one). Commands then reach it only through its console or SSH.
 */
export async function bootWithoutAgent(
  pvm: ProjectVm,
  image: MediaBootImage,
  disks: string[],
  ports: Record<string, number>,
  readyWhen: RegExp | string | undefined,
  timeoutMs: number,
): Promise<void> {
  const watched = await launchWatched(pvm, image, disks, ports, join(pvm.dir, 'boot-console.log'));
  try {
    if (readyWhen !== undefined) await watched.serial.expect(readyWhen, { timeoutMs });
  } catch (error) {
    throw new MachineCrashedError(
      pvm.vm.name,
      `readyWhen ${String(readyWhen)} did not show on the console: ${(error as Error).message}`,
      '',
    );
  } finally {
    watched.close();
  }
}

/** Asks the guest to power off (ACPI) and waits for it; a guest that does not is stopped after. */
export async function powerDown(pvm: ProjectVm, timeoutMs: number): Promise<void> {
  const record = vmmRecord(pvm);
  const attached = await projectVmms()
    .attach(pvm.vm.name, pvm.run)
    .catch(() => undefined);
  try {
    await attached?.powerDown();
  } catch {
    // Gone already, or no ACPI: stopVmm ends it.
  } finally {
    attached?.detach();
  }
  if (record) await waitForExit(record, timeoutMs);
}

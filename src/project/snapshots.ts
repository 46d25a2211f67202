import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ConfigError, SnapshotError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { killPoint } from '../util/kill-point.js';
import { ensurePrivateDir, makePrivateDir } from '../util/private.js';
import { settleInterrupted, withIntent } from './intent.js';
import { assignPorts } from './ports.js';
import { setUpRestoredVm } from './restored.js';
import { readJson, readState, snapshotsDir, withLock, writeFileAtomic, writeState } from './state.js';
import {
  launchVmm,
  type ProjectVm,
  prepareDisks,
  stopHub,
  stopVmm,
  VmDownError,
  vmImage,
  vmmRecord,
} from './vmm.js';
import { projectVmms } from './vmms.js';

/**
 * Per-project snapshots of a running VM in `.vmkit/<vm>/snapshots/<label>/`: the guest's CPU,
 * devices and RAM (QEMU migration to a file, taken while the guest is paused), copies of its
 * disks taken at the same instant, and the sync manifests that describe what the guest held.
 */
export interface ProjectSnapshot {
  label: string;
  createdAt: string;
  imageKey: string;
  memoryMiB: number;
  disks: string[];
  bytes: number;
}

const LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const SAVE_TIMEOUT_MS = 300_000;
const metaPath = (dir: string) => join(dir, 'snapshot.json');
const statePath = (dir: string) => join(dir, 'state');

function checkLabel(label: string): string {
  if (!LABEL.test(label)) {
    throw new ConfigError(
      `snapshot label ${JSON.stringify(label)}: use letters, digits, '.', '_' or '-' (up to 64)`,
    );
  }
  return label;
}

const copySparse = (from: string, to: string) =>
  runTool('cp', ['--sparse=always', from, to], { timeoutMs: 600_000 });
const syncManifests = (dir: string) => readdirSync(dir).filter((name) => /^synced-.*\.json$/.test(name));

export function listProjectSnapshots(pvm: ProjectVm): ProjectSnapshot[] {
  const root = snapshotsDir(pvm.dir);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((name) => !name.startsWith('.'))
    .map((name) => readJson<ProjectSnapshot>(metaPath(join(root, name))))
    .filter((meta): meta is ProjectSnapshot => meta !== undefined)
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** Pauses the VM, saves RAM, devices and disks under `label` (replacing an older one), resumes it. */
export async function saveSnapshot(pvm: ProjectVm, label: string): Promise<ProjectSnapshot> {
  checkLabel(label);
  return withLock(pvm.dir, `snapshot save ${label}`, async () => {
    await settleInterrupted(pvm);
    return withIntent(pvm, 'snapshot', () => takeSnapshot(pvm, label));
  });
}

/** saveSnapshot for a caller that holds the VM's lock already (up, after provisioning). */
export async function takeSnapshot(pvm: ProjectVm, label: string): Promise<ProjectSnapshot> {
  if (!vmmRecord(pvm)) throw new VmDownError(pvm);
  const image = await vmImage(pvm, () => {});
  const disks = await prepareDisks(pvm, image);
  const root = snapshotsDir(pvm.dir);
  ensurePrivateDir(root);
  const scratch = join(root, `.taking-${randomBytes(4).toString('hex')}`);
  makePrivateDir(scratch);
  try {
    const attached = await projectVmms().attach(pvm.vm.name, pvm.run);
    try {
      await attached.pause();
      try {
        await attached.writeState(statePath(scratch), {
          ramShared: false,
          timeoutMs: SAVE_TIMEOUT_MS,
          what: `snapshot ${label} of ${pvm.vm.name}`,
        });
        killPoint('snapshot', 'state saved'); // the guest paused, a .taking- folder half full
        // Paused, and its block layer flushed by the save: the disks match the RAM.
        for (const disk of disks) await copySparse(disk, join(scratch, basename(disk)));
      } finally {
        await attached.resume();
      }
    } finally {
      attached.detach();
    }
    for (const name of syncManifests(pvm.dir)) await copySparse(join(pvm.dir, name), join(scratch, name));
    const bytes = readdirSync(scratch).reduce(
      (sum, name) => sum + statSync(join(scratch, name)).blocks * 512,
      0,
    );
    const meta: ProjectSnapshot = {
      label,
      createdAt: new Date().toISOString(),
      imageKey: image.key,
      memoryMiB: pvm.vm.memoryMiB,
      disks: disks.map((disk) => basename(disk)),
      bytes,
    };
    writeFileAtomic(metaPath(scratch), JSON.stringify(meta, null, 2));
    const target = join(root, label);
    if (existsSync(target)) renameSync(target, join(root, `.old-${label}-${randomBytes(4).toString('hex')}`));
    killPoint('snapshot', 'old one moved aside');
    renameSync(scratch, target);
    for (const name of readdirSync(root)) {
      if (name.startsWith('.old-')) rmSync(join(root, name), { recursive: true, force: true });
    }
    return meta;
  } catch (error) {
    rmSync(scratch, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Replaces the VM with the snapshot `label`: its disks are copied back and a new QEMU loads the
 * saved RAM and devices. Works whether the VM runs or not.
 */
export async function restoreSnapshot(pvm: ProjectVm, label: string): Promise<{ restoreMs: number }> {
  checkLabel(label);
  return withLock(pvm.dir, `snapshot restore ${label}`, async () => {
    await settleInterrupted(pvm);
    return restoreLocked(pvm, label);
  });
}

async function restoreLocked(pvm: ProjectVm, label: string): Promise<{ restoreMs: number }> {
  const start = performance.now();
  const dir = join(snapshotsDir(pvm.dir), label);
  const meta = readJson<ProjectSnapshot>(metaPath(dir));
  if (!meta) {
    const known = listProjectSnapshots(pvm).map((snapshot) => snapshot.label);
    throw new ConfigError(
      `VM ${pvm.vm.name} has no snapshot ${JSON.stringify(label)} (it has: ${known.join(', ') || 'none'})`,
    );
  }
  const image = await vmImage(pvm, () => {});
  if (image.key !== meta.imageKey || pvm.vm.memoryMiB !== meta.memoryMiB) {
    throw new SnapshotError(
      `snapshot ${label} of ${pvm.vm.name} was taken with image ${meta.imageKey} and ${meta.memoryMiB} MiB; the config now gives ${image.key} and ${pvm.vm.memoryMiB} MiB (take it again)`,
    );
  }
  // Checked above: a wrong label or a changed config leaves the VM as it was.
  return withIntent(pvm, 'restore', async () => {
    await stopHub(pvm);
    await stopVmm(pvm);
    // What was synced is forgotten first: a restore cut off after a disk came back must not
    // leave manifests that claim files the disk no longer holds (the next sync resends them all).
    for (const name of syncManifests(pvm.dir)) rmSync(join(pvm.dir, name), { force: true });
    const disks = await prepareDisks(pvm, image);
    for (const disk of disks) {
      const partial = `${disk}.restoring`;
      await copySparse(join(dir, basename(disk)), partial);
      renameSync(partial, disk);
    }
    for (const name of syncManifests(dir)) await copySparse(join(dir, name), join(pvm.dir, name));
    const state = readState(pvm.dir);
    const ports = await assignPorts(pvm.vm, state, new Set());
    writeState(pvm.dir, { ...state, ports, running: false });
    await launchVmm(pvm, image, disks, ports, true);
    try {
      const attached = await projectVmms().attach(pvm.vm.name, pvm.run);
      try {
        await attached.readState(statePath(dir), { ramShared: false, timeoutMs: SAVE_TIMEOUT_MS });
      } finally {
        attached.detach();
      }
      if (image.profile !== 'foreign') await setUpRestored(pvm, image.profile);
    } catch (error) {
      await stopHub(pvm);
      await stopVmm(pvm);
      throw error;
    }
    writeState(pvm.dir, { ...readState(pvm.dir), running: true, bootedAt: new Date().toISOString() });
    return { restoreMs: Math.round(performance.now() - start) };
  });
}

/** The restored guest is told the time and given fresh randomness; then its hub takes the agent. */
async function setUpRestored(pvm: ProjectVm, profile: string): Promise<void> {
  await setUpRestoredVm(pvm, profile, {
    clockSeconds: Math.floor(Date.now() / 1000),
    entropyHex: randomBytes(64).toString('hex'),
    renumber: [],
    hosts: {},
  });
}

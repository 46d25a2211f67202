import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { chooseAccel } from '../backends/accel.js';
import { type HostNicSpec, requireCapability } from '../backends/backend.js';
import { backendNamed } from '../backends/index.js';
import { ConfigError, SnapshotError } from '../errors.js';
import { profileNamed } from '../guest/profiles/index.js';
import type { RestoreSetup } from '../guest/profiles/profile.js';
import type { MachineConfig } from '../machine/config.js';
import { hostNicSetup } from '../machine/host-network.js';
import { macAddress, newMachineId, ramFilePath } from '../machine/identity.js';
import type { MachineNic, SnapshotTaker } from '../machine/internals.js';
import { launchMachine } from '../machine/launch.js';
import type { Machine } from '../machine/machine.js';
import { DEFAULTS, type NetworkAttachment } from '../machine/options.js';
import { defaultRuntime } from '../runtime/runtime.js';
import { runTool } from '../util/exec.js';
import { createQcow2 } from '../util/qcow2.js';
import type { SnapshotManifest, SnapshotRecord } from './manifest.js';
import { parseRestoreOptions, type RestoreOptions } from './options.js';
import { restorability } from './verify.js';

export type { RestoreOptions } from './options.js';

/**
 * A restore that stands in for a boot (the boot cache): the machine gets exactly the identity a
 * boot would have given it (its own MACs, hostname and addresses, whatever the saved guest had)
 * and its own NIC to the host (the same devices, its own host ports).
 */
export interface AsBooted {
  hostNic?: HostNicSpec;
  /** The console output of the boot that was saved, to start the machine's console with. */
  consoleHistory?: Buffer;
  /**
   * A copy of the saved RAM instead of a copy-on-write mapping of it: costs a copy, but the
   * machine's own snapshots then keep RAM in a file that clones map, not in their saved state.
   */
  ownRam?: boolean;
}

/** Starts a fresh VMM from a snapshot; resolves when the guest agent answers. */
export async function restoreFrom(
  record: SnapshotRecord,
  options: RestoreOptions,
  takeSnapshot: SnapshotTaker,
  asBooted?: AsBooted,
): Promise<Machine> {
  options = parseRestoreOptions(options);
  const { manifest, dir } = record;
  const name = options.name ?? manifest.source;
  const runtime = options.runtime ?? defaultRuntime();
  checkRequest(manifest, options);
  const reasons = await restorability(record, runtime, options.accel);
  if (reasons.length > 0) {
    throw new SnapshotError(`snapshot ${manifest.id} cannot be restored here: ${reasons.join('; ')}`);
  }
  const backend = backendNamed(manifest.identity.backend);
  requireCapability(backend, 'snapshot');
  if (!manifest.ramInStream) requireCapability(backend, 'cowFork');
  const profile = profileNamed(manifest.image.profile ?? manifest.image.name);
  const accel = await chooseAccel(options.accel ?? 'auto', runtime);
  const { identity } = manifest;
  const config = snapshotConfig(manifest, options.allowReboot ?? manifest.allowReboot ?? false);
  if (asBooted) config.hostNic = asBooted.hostNic;
  const timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs;
  const { nics, renumber } = asBooted
    ? bootedIdentities(manifest, name, options.networks ?? [])
    : cloneIdentities(manifest, name, options.networks ?? []);
  // Restored under its own name, it is the machine it was (hostname and machine ID kept); else a new one.
  const sameMachine = name === manifest.source && !asBooted;
  const setup: RestoreSetup = {
    clockSeconds: Math.floor(Date.now() / 1000),
    ...(sameMachine ? {} : { hostname: name, machineId: newMachineId() }),
    entropyHex: randomBytes(64).toString('hex'),
    renumber,
    hosts: options.hosts ?? {},
  };
  return launchMachine({
    name,
    config,
    backend,
    runtime,
    profile,
    accel,
    nics,
    timeoutMs,
    commandTimeoutMs: options.commandTimeoutMs ?? DEFAULTS.commandTimeoutMs,
    log: options.log ?? (() => {}),
    signal: options.signal,
    incoming: true,
    statePath: join(dir, 'state'),
    verb: asBooted ? `started from the boot cache (${manifest.id})` : `restored from snapshot ${manifest.id}`,
    async prepare(stateDir) {
      const disks: string[] = [];
      for (const index of identity.disks.keys()) {
        const overlay = join(stateDir, `disk${index}.qcow2`);
        const base = join(dir, `disk${index}.qcow2`);
        await createQcow2(overlay, { base });
        disks.push(overlay);
      }
      if (asBooted?.ownRam && !manifest.ramInStream) {
        // A RAM file of its own, as a booted machine has: its snapshots keep RAM in a file too.
        const path = ramFilePath(runtime, stateDir, name);
        await runTool('cp', ['--sparse=always', join(dir, 'ram'), path], { timeoutMs }).catch(
          async (error) => {
            await rm(path, { force: true }); // a part copied: the VMM that would have unlinked it never starts
            throw error;
          },
        );
        return { memory: { path, share: true }, disks };
      }
      const memory = manifest.ramInStream
        ? { path: ramFilePath(runtime, stateDir, name), share: true }
        : { path: join(dir, 'ram'), share: false }; // copy-on-write: clones share what they only read
      return { memory, disks };
    },
    async ready(vmm, agent) {
      await vmm.loadState(join(dir, 'state'), { ramInFile: !manifest.ramInStream, timeoutMs });
      agent.assumeBannerSeen();
    },
    bootReady: (_vmm, agent, console, waitMs) =>
      profile.readiness.wait({ machine: name, agent, console, timeoutMs: waitMs }),
    bootSetup: {
      hostname: name,
      nics: nics.map((nic, index) => ({
        index,
        ...(nic.address ? { address: nic.address } : {}),
        ...(nic.mac !== manifest.macs[index] ? { mac: nic.mac } : {}),
      })),
      hostNic: hostNicSetup(config),
      hosts: options.hosts ?? {},
      ...(setup.machineId ? { machineId: setup.machineId } : {}),
    },
    setupScript: profile.afterRestore(setup),
    agentSetup: profile.restoreByAgent?.(setup),
    takeSnapshot,
    ...(asBooted?.consoleHistory ? { consoleHistory: asBooted.consoleHistory } : {}),
  });
}

/** The configuration a snapshot's machine had, for a VMM that its saved state loads into. */
export function snapshotConfig(manifest: SnapshotManifest, allowReboot: boolean): MachineConfig {
  const { identity } = manifest;
  return {
    backend: identity.backend,
    image: manifest.image,
    memoryMiB: identity.memoryMiB,
    cpus: identity.cpus,
    accel: identity.accel,
    nics: identity.nics,
    macs: manifest.macs,
    disks: identity.disks.map((sizeMiB) => ({ sizeMiB })),
    qemuArgs: identity.qemuArgs,
    // The same files, attached as they were: the saved state expects those devices.
    ...(identity.extraDisks ? { extraDisks: identity.extraDisks } : {}),
    hostNic: identity.hostNic ?? undefined,
    ...(identity.display ? { display: true } : {}),
    ...(allowReboot ? { allowReboot: true } : {}),
  };
}

/**
 * The MAC and address of each of a clone's NICs. A NIC keeps the snapshot's identity unless it is
 * given an address, or another machine on its switch already has that identity (the source, or an
 * earlier clone): then it gets a MAC of its own and the lowest free address of the same subnet.
 * Must run in the same tick as launchMachine's claims, so that clones started together differ.
 */
function cloneIdentities(manifest: SnapshotManifest, name: string, networks: NetworkAttachment[]) {
  const renumber: RestoreSetup['renumber'] = [];
  const nics = manifest.macs.map((deviceMac, index): MachineNic => {
    const saved = manifest.nics[index];
    const sw = networks[index]?.switch;
    const keptMac = saved?.mac ?? deviceMac;
    const taken = sw !== undefined && sw.identities.holderOf(keptMac) !== undefined;
    const address =
      networks[index]?.address ??
      (taken && saved?.address ? sw.identities.freeAddress(saved.address) : undefined);
    if (address === undefined) return { switch: sw, mac: keptMac, address: saved?.address };
    const mac = macAddress(`${name}/${manifest.id}`, index);
    renumber.push({ index, address, mac });
    return { switch: sw, mac, address };
  });
  return { nics, renumber };
}

/** A booted machine's NICs: its own MACs (macAddress(name, index)) and the addresses it was given. */
function bootedIdentities(manifest: SnapshotManifest, name: string, networks: NetworkAttachment[]) {
  const renumber: RestoreSetup['renumber'] = [];
  const nics = manifest.macs.map((_, index): MachineNic => {
    const saved = manifest.nics[index];
    const mac = macAddress(name, index);
    const address = networks[index]?.address;
    // The saved guest was set up neutrally: no address on any switch NIC.
    if (mac !== saved?.mac || address) renumber.push({ index, mac, ...(address ? { address } : {}) });
    return { switch: networks[index]?.switch, mac, address };
  });
  return { nics, renumber };
}

/** Refuses what the caller asked for that the snapshot cannot be: bad input, not a damaged snapshot. */
function checkRequest(manifest: SnapshotManifest, options: RestoreOptions): void {
  for (const [what, wanted, actual] of [
    ['memoryMiB', options.memoryMiB, manifest.identity.memoryMiB],
    ['cpus', options.cpus, manifest.identity.cpus],
  ] as const) {
    if (wanted !== undefined && wanted !== actual) {
      throw new ConfigError(
        `snapshot ${manifest.id} has ${what} ${actual}; it cannot be restored with ${wanted}`,
      );
    }
  }
  if ((options.networks?.length ?? 0) > manifest.identity.nics) {
    throw new ConfigError(
      `snapshot ${manifest.id} has ${manifest.identity.nics} NIC(s); ${options.networks?.length} networks were given`,
    );
  }
}

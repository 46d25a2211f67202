import { randomBytes } from 'node:crypto';
import { copyFile, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, GuestSetupError } from '../errors.js';
import type { RestoreSetup } from '../guest/profiles/profile.js';
import { setUpGuest } from '../machine/guest-setup.js';
import { serviceHosts } from '../machine/host-network.js';
import type { SnapshotTaker } from '../machine/internals.js';
import type { Machine } from '../machine/machine.js';
import type { MachineOptions } from '../machine/options.js';
import { bootResolved, type ResolvedMachine, resolveMachine } from '../machine/start.js';
import { takeTurn } from '../util/turn.js';
import { BOOT_CONSOLE, bootCacheId, bootCacheRefusal, pruneBootCache, usableEntry } from './boot-cache.js';
import { snapshotRoot } from './manifest.js';
import { restoreFrom } from './restore.js';
import type { Snapshot } from './snapshot.js';
import { takeSnapshot } from './take.js';

/** How long a start waits for another process's first boot of the same configuration, at most. */
const WAIT_FOR_FIRST_BOOT_MS = 600_000;

/**
 * Starts a machine: from the boot cache's saved state of its configuration when there is one,
 * else by booting it, saving that boot for the next start, and then giving the guest its own
 * identity. Either way the machine is the same as one booted for it (README: "The boot cache").
 */
export async function startThroughBootCache(
  options: MachineOptions,
  taker: SnapshotTaker,
  how: { ownRam?: boolean } = {},
): Promise<Machine> {
  const resolved = await resolveMachine(options); // validates every option first
  const refusal = bootCacheRefusal(options, resolved);
  if (refusal) return bootResolved(resolved, options, taker);
  const log = options.log ?? (() => {});
  const warn = (line: string) => {
    log(line);
    process.emitWarning(line, 'VmkitBootCache');
  };
  const id = await bootCacheId(resolved);
  const hit = await usableEntry(id, resolved, warn);
  if (hit) return startFromEntry(hit, options, resolved, taker, warn, how);
  // One first boot per configuration: a second start waits for it, then restores what it saved.
  const turn = await takeTurn(
    // Per store: another user's (or another VMKIT_SNAPSHOT_DIR's) first boot is not this one.
    `boot-cache:${snapshotRoot()}:${id}`,
    Math.max(WAIT_FOR_FIRST_BOOT_MS, resolved.timeoutMs),
    `the first boot of boot cache entry ${id}`,
    `booting ${resolved.name} for boot cache entry ${id}`,
    options.signal,
  ).catch((error: Error) => {
    if (options.signal?.aborted) throw error;
    warn(`boot cache: ${error.message}; booting without it`);
    return undefined;
  });
  if (!turn) return bootResolved(resolved, options, taker);
  let machine: Machine;
  try {
    const saved = await usableEntry(id, resolved, warn);
    if (saved) {
      turn.release();
      return await startFromEntry(saved, options, resolved, taker, warn, how);
    }
    machine = await bootResolved(resolved, options, taker, true);
    await saveEntry(machine, id, resolved, log, warn).catch(async (error) => {
      await machine.close();
      throw error;
    });
  } finally {
    turn.release(); // the entry is saved (or will not be): the starts waiting for it go on
  }
  await giveIdentity(machine, options).catch(async (error) => {
    await machine.close();
    throw error;
  });
  return machine;
}

/**
 * Restores a machine from an entry. An entry whose restore fails although it verified (a VMM
 * that cannot load it after all) is removed, and the machine is booted for real instead.
 */
async function startFromEntry(
  entry: Snapshot,
  options: MachineOptions,
  resolved: ResolvedMachine,
  taker: SnapshotTaker,
  warn: (line: string) => void,
  how: { ownRam?: boolean },
): Promise<Machine> {
  try {
    return await restoreEntry(entry, options, resolved, taker, how);
  } catch (error) {
    if (options.signal?.aborted || error instanceof ConfigError) throw error;
    warn(
      `boot cache: entry ${entry.id} removed, booting for real: its restore failed: ${(error as Error).message}`,
    );
    await rm(entry.dir, { recursive: true, force: true });
    return bootResolved(resolved, options, taker);
  }
}

async function restoreEntry(
  entry: Snapshot,
  options: MachineOptions,
  resolved: ResolvedMachine,
  taker: SnapshotTaker,
  how: { ownRam?: boolean },
): Promise<Machine> {
  options.log?.(`${resolved.accel.accel.toUpperCase()}: ${resolved.accel.reason}`);
  const consoleHistory = await readFile(join(entry.dir, BOOT_CONSOLE)).catch(() => undefined);
  return restoreFrom(
    entry,
    {
      name: resolved.name,
      accel: resolved.accel.accel,
      timeoutMs: resolved.timeoutMs,
      commandTimeoutMs: resolved.commandTimeoutMs,
      runtime: resolved.runtime,
      hosts: bootHosts(options),
      ...(options.networks ? { networks: options.networks } : {}),
      ...(options.log ? { log: options.log } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      allowReboot: options.allowReboot ?? false,
    },
    taker,
    {
      hostNic: resolved.config.hostNic,
      ...how,
      ...(consoleHistory ? { consoleHistory } : {}),
    },
  );
}

/** The hosts lines a boot gives the guest: its host services by name, then the caller's. */
const bootHosts = (options: MachineOptions) => ({
  ...serviceHosts(options.hostServices ?? {}),
  ...options.hosts,
});

/**
 * Saves a neutral first boot as the configuration's entry, once the guest's boot has settled.
 * A failure (a full disk, say) only costs the next start its shortcut: it is a warning.
 */
async function saveEntry(
  machine: Machine,
  id: string,
  resolved: ResolvedMachine,
  log: (line: string) => void,
  warn: (line: string) => void,
): Promise<void> {
  const started = performance.now();
  try {
    const settle = resolved.profile.settle?.();
    if (settle) await machine.succeed(settle, { timeoutMs: resolved.timeoutMs });
    const label = id.slice(0, id.lastIndexOf('-'));
    const record = await takeSnapshot(machine.parts, label, { id });
    // Its boot's console output, for the consoles of the machines restored from it (not verified:
    // text for people and console waits, which the guest state does not depend on).
    await copyFile(join(machine.stateDir, 'console.log'), join(record.dir, BOOT_CONSOLE)).catch(() => {});
    log(`boot cache: saved ${id} in ${Math.round(performance.now() - started)} ms`);
    for (const gone of await pruneBootCache({ keep: id }))
      log(`boot cache: removed ${gone.id}: ${gone.reason}`);
  } catch (error) {
    if (!machine.isRunning) throw error;
    warn(`boot cache: could not save ${id}, the next start boots again: ${(error as Error).message}`);
  }
}

/** Gives a neutrally booted guest its own hostname, addresses and hosts lines, as a restore does. */
async function giveIdentity(machine: Machine, options: MachineOptions): Promise<void> {
  const { profile, nics, agent } = machine.parts;
  const setup: RestoreSetup = {
    clockSeconds: Math.floor(Date.now() / 1000),
    hostname: machine.name,
    entropyHex: randomBytes(64).toString('hex'),
    // The one its boot set-up holds, so that a reboot writes the same.
    ...(machine.parts.bootSetup.machineId ? { machineId: machine.parts.bootSetup.machineId } : {}),
    renumber: nics.flatMap((nic, index) =>
      nic.address ? [{ index, mac: nic.mac, address: nic.address }] : [],
    ),
    hosts: bootHosts(options),
  };
  await setUpGuest(agent, (script) => machine.succeed(script, { timeoutMs: 30_000 }), {
    setupScript: profile.afterRestore(setup),
    agentSetup: profile.restoreByAgent?.(setup),
    log: options.log ?? (() => {}),
  }).catch((error: Error) => {
    throw new GuestSetupError(`machine ${machine.name} booted but its setup failed: ${error.message}`);
  });
}

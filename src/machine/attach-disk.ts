import type { ExtraDisk } from '../backends/backend.js';
import { requireCapability } from '../backends/backend.js';
import { CapabilityError, ConfigError, MachineCrashedError, TimeoutError } from '../errors.js';
import { parseInput } from '../util/validate.js';
import { checkCall } from './calls.js';
import type { CommandOptions, ExecResult } from './commands.js';
import { extraDiskSchema, MAX_EXTRA_DISKS, resolveExtraDisks } from './extra-disks.js';
import type { MachineInternals } from './internals.js';

/**
 * Attaches a disk to a running machine, as `extraDisks` does at boot: checked the same way, added
 * by the VMM, then waited for until the guest has it. Returns its device in the guest (/dev/vdb).
 * It stays until the VMM ends; a machine with one cannot be snapshotted (its saved state would
 * name a device that a restore does not make).
 */
export async function attachDisk(
  internals: MachineInternals,
  execute: (command: string, options: CommandOptions) => Promise<ExecResult>,
  disk: ExtraDisk,
  options: CommandOptions,
): Promise<string> {
  const timeoutMs = checkCall('attachDisk', { options }).timeoutMs ?? internals.commandTimeoutMs;
  const what = 'attachDisk: disk';
  const checked = parseInput(extraDiskSchema, disk, what) as ExtraDisk;
  requireCapability(internals.backend, 'diskHotplug', undefined, `attaching disk ${checked.serial}`);
  const { vmm, config, name } = internals;
  if (!vmm.attachDisk) throw new CapabilityError(internals.backend.title, 'diskHotplug');
  if (vmm.hasExited)
    throw new MachineCrashedError(
      name,
      'cannot attach a disk to a machine that is not running',
      internals.console.tail(),
    );
  const [resolved] = await resolveExtraDisks([checked], () => `${what}.path`);
  if (!resolved) throw new ConfigError(`${what}: invalid`);
  // Checked and claimed with no await in between: concurrent calls see each other's disks.
  const present = [...(config.extraDisks ?? []), ...internals.attachedDisks];
  if (present.length >= MAX_EXTRA_DISKS)
    throw new ConfigError(
      `${what}: machine ${name} has ${present.length} extra disks already, the most it takes`,
    );
  if (present.some((other) => other.serial === checked.serial))
    throw new ConfigError(`${what}: machine ${name} has a disk with serial ${checked.serial} already`);
  if (present.some((other) => other.path === resolved.path))
    throw new ConfigError(`${what}.path: ${disk.path} is already attached to machine ${name}`);
  // A dot: no serial (the ids of extraDisks) has one.
  const id = `hot.${internals.attachedDisks.push(resolved) - 1}`;
  const started = performance.now();
  try {
    await vmm.attachDisk({ ...resolved, id }, timeoutMs);
  } catch (error) {
    internals.attachedDisks.splice(internals.attachedDisks.indexOf(resolved), 1);
    throw error;
  }
  const left = Math.max(1000, Math.round(timeoutMs - (performance.now() - started)));
  const found = await execute(internals.profile.commands.diskWithSerial(resolved.serial, left / 1000 - 1), {
    timeoutMs: left,
  });
  if (found.exitCode !== 0) {
    throw new TimeoutError(
      `disk ${resolved.serial} to show in machine ${name}`,
      timeoutMs,
      found.stderr.trim(),
      internals.console.tail(),
    );
  }
  internals.log(
    `attached disk ${resolved.serial} as ${found.stdout.trim()} in ${Math.round(performance.now() - started)} ms`,
  );
  return found.stdout.trim();
}

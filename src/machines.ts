import type { Machine } from './machine/machine.js';
import type { MachineOptions } from './machine/options.js';
import { startThroughBootCache } from './snapshot/boot-start.js';
import { snapshotTaker } from './snapshot/snapshot.js';

/**
 * Starts a machine and resolves once its guest agent answers: restored from the boot cache's
 * saved state of its configuration when there is one, else booted (and that boot saved for the
 * next start). `fresh: true` always boots.
 *
 * The one place where the machine layer meets the snapshot layer above it: a Machine's
 * snapshot() is handed in here, so that neither layer imports the other in a circle.
 */
export function startMachine(options: MachineOptions): Promise<Machine> {
  return startThroughBootCache(options, snapshotTaker);
}

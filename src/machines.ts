import type { Machine } from './machine/machine.js';
import type { MachineOptions } from './machine/options.js';
import { bootMachine } from './machine/start.js';
import { snapshotTaker } from './snapshot/snapshot.js';

/**
 * Boots a machine and resolves once its guest agent answers.
 *
 * The one place where the machine layer meets the snapshot layer above it: a Machine's
 * snapshot() is handed in here, so that neither layer imports the other in a circle.
 */
export function startMachine(options: MachineOptions): Promise<Machine> {
  return bootMachine(options, snapshotTaker);
}

import { vmmRunning } from '../readiness.js';
import { posixCommands } from './commands.js';
import type { GuestProfile } from './profile.js';

/**
 * A guest without vmkit's backdoor (an installer ISO, a BSD disk, an appliance): vmkit runs
 * nothing inside it, so there is nothing to set up after boot or restore. Tests drive it through
 * its serial console or SSH; its readiness is chosen per machine (`readyWhen`).
 */
export const foreignProfile: GuestProfile = {
  name: 'foreign',
  readiness: vmmRunning,
  commands: posixCommands, // never run: there is no agent to run them
  afterBoot: () => '',
  afterRestore: () => '',
};

import { agentBanner } from '../readiness.js';
import { posixCommands } from './commands.js';
import type { GuestProfile } from './profile.js';

/**
 * The guest of the mock backend: its agent is a script that answers commands, so there is
 * nothing to set up after boot or restore, and no set-up command for the script to expect.
 */
export const mockProfile: GuestProfile = {
  name: 'mock',
  readiness: agentBanner,
  afterBoot: () => '',
  afterRestore: () => '',
  commands: posixCommands, // answered by the mock itself, as its own commands
};

import { agentBanner } from '../readiness.js';
import { posixCommands } from './commands.js';
import type { GuestProfile } from './profile.js';
import { agentRestore, bootSteps, restoreSteps, setupScript } from './setup-steps.js';

/** The tiny image: busybox, the backdoor started by init, no service manager. */
export const tinyProfile: GuestProfile = {
  name: 'tiny',
  readiness: agentBanner,
  commands: posixCommands,

  afterBoot: (setup) => setupScript(bootSteps(setup)),
  afterRestore: (setup) => setupScript(restoreSteps(setup)),
  restoreByAgent: (setup) => agentRestore(setup, false),
};

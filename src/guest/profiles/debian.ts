import { agentBanner } from '../readiness.js';
import { guestScript, posixCommands } from './commands.js';
import type { GuestProfile } from './profile.js';
import { agentRestore, bootSteps, restoreSteps, setupScript, systemdFileSteps } from './setup-steps.js';

/**
 * Debian with systemd: the backdoor is an early systemd unit, so the guest is ready when its
 * banner comes, before the rest of the boot finishes (waitForUnit('multi-user.target') waits for
 * that). Interfaces are eth<n> (net.ifnames=0) and no network manager runs, so addresses, hosts,
 * clock and entropy are set as on tiny, with the same tools; the hostname is also written to
 * /etc/hostname, where systemd and its tools read it, and on 127.0.1.1 in /etc/hosts (else sudo
 * looks it up in DNS, and waits): the `hostname-file` step of guest/profiles/setup.sh. A new
 * machine gets a machine ID of its own (`machine-id`), the journal kept in view under it.
 */
export const debianProfile: GuestProfile = {
  name: 'debian',
  readiness: agentBanner,
  commands: posixCommands,

  afterBoot: (setup) =>
    setupScript([...bootSteps(setup), ...systemdFileSteps(setup.hostname, setup.machineId)]),
  afterRestore: (setup) =>
    setupScript([...restoreSteps(setup), ...systemdFileSteps(setup.hostname, setup.machineId)]),
  settle: () => guestScript('settle-systemd.sh'),
  restoreByAgent: (setup) => agentRestore(setup, true),
};

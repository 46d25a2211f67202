/**
 * Guests that reboot: when the guest resets (a reboot from inside it on a machine with
 * allowReboot, reboot(), a QMP system_reset), the backdoor channel fails what the reset killed and
 * holds every later call until the agent is back and vmkit's set-up is applied again.
 */
import { GuestRebootedError, GuestSetupError } from '../errors.js';
import type { MachineInternals } from './internals.js';

/** How long a rebooting guest may take to bring its backdoor back. */
export const REBOOT_TIMEOUT_MS = 300_000;

/**
 * What a guest that booted again is told: the identity and addresses it had (a clone's too),
 * and the hosts lines vmkit gave it, added only where missing (a disk root keeps them).
 */
export function rebootSetup({ profile, bootSetup }: Pick<MachineInternals, 'profile' | 'bootSetup'>): string {
  const hosts = Object.entries(bootSetup.hosts).map(([host, address]) => `${address} ${host}`);
  const boot = profile.afterBoot({ ...bootSetup, hosts: {} });
  // A subshell: the hosts script sets its own arguments.
  return hosts.length ? `${boot}\n(\n${profile.commands.ensureHosts(hosts)}\n)` : boot;
}

/** Sets the guest up again after every reset of the machine's current VMM. */
export function recoverAfterResets(internals: MachineInternals): void {
  const { vmm, agent, name, console } = internals;
  if (!vmm.onReset || internals.config.backdoor === false) return;
  vmm.onReset(() => {
    if (vmm.hasExited) return;
    internals.log('the guest reset: waiting for its backdoor, then setting it up again');
    agent.guestReset(
      (what) => new GuestRebootedError(name, what, console.tail()),
      async (run, latest) => {
        await agent.waitForBanner(REBOOT_TIMEOUT_MS);
        if (!latest()) return; // it reset again: the newest recovery sets it up
        const result = await run(rebootSetup(internals), 30_000);
        if (result.status !== 0) {
          throw new GuestSetupError(
            `machine ${name} rebooted but its set-up failed (status ${result.status}): ${result.stderr.toString('utf8').trim()}`,
          );
        }
      },
    );
  });
}

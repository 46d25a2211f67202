import { MachineCrashedError } from '../errors.js';
import type { MachineInternals } from './internals.js';
import { recoverAfterResets } from './reboots.js';

/** A machine's switch NICs as `machine.networks` shows them. */
export function describeNics(nics: MachineInternals['nics']) {
  return nics.map((nic, index) => ({
    index,
    ...(nic.switch ? { switch: nic.switch.name } : {}),
    mac: nic.mac,
    ...(nic.address ? { address: nic.address } : {}),
  }));
}

/**
 * Watches the machine's VMM: when the guest resets it is set up again (reboots.ts); when the VMM
 * exits, every pending and later call fails with MachineCrashedError saying why.
 */
export function watchVmm(internals: MachineInternals, stopping: () => boolean): void {
  recoverAfterResets(internals);
  const { vmm, agent, console, name, backend } = internals;
  vmm.exited.then((info) => {
    const how = info.signal ? `killed by ${info.signal}` : `status ${info.code}`;
    const reason = stopping() ? 'machine was shut down' : `${backend.title} exited unexpectedly (${how})`;
    const stderr = vmm.stderrTail().trim();
    if (vmm.endedWith && !stopping()) return agent.fail(vmm.endedWith);
    agent.fail(
      new MachineCrashedError(
        name,
        stderr && !stopping() ? `${reason}; ${backend.title} said: ${stderr}` : reason,
        console.tail(),
      ),
    );
  });
}

import { z } from 'zod';
import { requireCapability } from '../backends/backend.js';
import { ConfigError, QmpError } from '../errors.js';
import { freePort } from '../util/sockets.js';
import { parseInput, wholeNumber } from '../util/validate.js';
import type { MachineInternals } from './internals.js';
import { refuseAttached } from './owner.js';

export interface PortForward {
  /** The port on the host's loopback (127.0.0.1) that leads to the guest port. */
  hostPort: number;
  guestPort: number;
  /** Stops forwarding; idempotent. */
  close(): Promise<void>;
}

const forwardOptions = z
  .object({ hostPort: wholeNumber(1, 65_535).optional(), guestPort: wholeNumber(1, 65_535) })
  .strict();

/** Forwards a host port on 127.0.0.1 to a guest TCP port, through the machine's NIC to the host. */
export async function forwardPort(
  machine: MachineInternals,
  options: { hostPort?: number; guestPort: number },
): Promise<PortForward> {
  const { hostPort: wanted, guestPort } = parseInput(forwardOptions, options, 'forwardPort options');
  refuseAttached(machine, 'forwardPort()');
  requireCapability(machine.backend, 'hostNetwork');
  const hostPort = wanted ?? (await freePort());
  try {
    await machine.vmm.addPortForward(hostPort, guestPort);
  } catch (error) {
    if (error instanceof QmpError && /Could not set up host forwarding/i.test(error.description)) {
      throw new ConfigError(`forwardPort: host port ${hostPort} is already taken on 127.0.0.1`);
    }
    throw error;
  }
  let closed = false;
  return {
    hostPort,
    guestPort,
    close: async () => {
      if (closed || machine.vmm.hasExited) return;
      closed = true;
      await machine.vmm.removePortForward(hostPort);
    },
  };
}

/** Takes every switch NIC of the machine down (a pulled cable) or up again. */
export async function setLinks(machine: MachineInternals, up: boolean): Promise<void> {
  refuseAttached(machine, 'block() and unblock()');
  for (const index of machine.nics.keys()) await machine.vmm.setLinkUp(index, up);
}

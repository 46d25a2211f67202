import { ConfigError } from '../errors.js';
import { freePort, portFree } from '../util/sockets.js';
import type { VmConfig } from './config.js';
import type { VmState } from './state.js';

/** The guest port of the VM's sshd: 22 unless the config says otherwise. */
export const sshGuestPort = (vm: VmConfig) => vm.sshPort ?? 22;

/**
 * The guest ports the VM forwards: the configured ones and its sshd's (always: whether the image
 * has an sshd is known only once it runs, and a forward to nothing costs nothing).
 */
export function forwardedGuestPorts(vm: VmConfig): number[] {
  return [...new Set([...vm.ports.map((port) => port.guest), sshGuestPort(vm)])];
}

/**
 * Host ports for the VM's forwards: a fixed host port from the config must be free (else a
 * ConfigError naming it); a port picked earlier is kept while it is free; otherwise a new free
 * one. Picks stay distinct from each other and from `avoid` (ports of the project's other VMs).
 */
export async function assignPorts(
  vm: VmConfig,
  state: VmState,
  avoid: Set<number>,
): Promise<Record<string, number>> {
  const assigned: Record<string, number> = {};
  const taken = new Set(avoid);
  for (const guest of forwardedGuestPorts(vm)) {
    const fixed = vm.ports.find((port) => port.guest === guest)?.host;
    if (fixed !== undefined) {
      if (taken.has(fixed) || !(await portFree(fixed))) {
        throw new ConfigError(
          `vms.${vm.name}.ports: host port ${fixed} (for guest port ${guest}) is already taken`,
        );
      }
      assigned[guest] = fixed;
    } else {
      const previous = state.ports[guest];
      let port =
        previous !== undefined && !taken.has(previous) && (await portFree(previous)) ? previous : undefined;
      while (port === undefined || taken.has(port)) port = await freePort();
      assigned[guest] = port;
    }
    taken.add(assigned[guest] as number);
  }
  return assigned;
}

import type { HostNicSpec } from '../backends/backend.js';
import type { HostNicSetup } from '../guest/profiles/profile.js';
import type { MachineConfig } from './config.js';
import { macAddress } from './identity.js';

/**
 * The guest's side of its NIC to the host (QEMU's user-mode network, 10.0.2.0/24): its address,
 * the gateway when it may reach the internet, and one guest address per named host service.
 */
export const HOST_NIC = {
  address: '10.0.2.15/24',
  gateway: '10.0.2.2',
  nameserver: '10.0.2.3',
  /** Host service i is reached at 10.0.2.(100 + i). */
  serviceAddress: (index: number) => `10.0.2.${100 + index}`,
};

/** The host NIC of a machine: restricted unless `internet`, with the named host services. */
export function hostNicFor(name: string, internet: boolean, services: Record<string, number>): HostNicSpec {
  return {
    mac: macAddress(name, 'host'),
    internet,
    services: Object.values(services).map((port, index) => ({
      guestAddress: HOST_NIC.serviceAddress(index),
      port,
      hostPort: port,
    })),
  };
}

/** /etc/hosts lines for named host services: each name at its guest address. */
export function serviceHosts(services: Record<string, number>): Record<string, string> {
  return Object.fromEntries(
    Object.keys(services).map((name, index) => [name, HOST_NIC.serviceAddress(index)]),
  );
}

/** What the guest is told of its host NIC (the last NIC), if it has one. */
export function hostNicSetup(config: MachineConfig): HostNicSetup | undefined {
  if (!config.hostNic) return undefined;
  return {
    index: config.nics,
    address: HOST_NIC.address,
    ...(config.hostNic.internet ? { gateway: HOST_NIC.gateway, nameserver: HOST_NIC.nameserver } : {}),
  };
}

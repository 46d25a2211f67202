import type { HostNicSpec } from '../backends/backend.js';
import { MACHINE_OUTBOUND } from '../backends/outbound/launch.js';
import type { HostNicSetup } from '../guest/profiles/profile.js';
import type { MachineConfig } from './config.js';
import { macAddress } from './identity.js';

/**
 * The guest's side of its NIC to the host (QEMU's user-mode network, restricted, 10.0.2.0/24):
 * its address and one guest address per named host service. With outbound access a second NIC
 * follows it, out through a filtering relay (10.0.3.0/24), with the default route and the resolver.
 */
export const HOST_NIC = {
  address: '10.0.2.15/24',
  /** Host service i is reached at 10.0.2.(100 + i). */
  serviceAddress: (index: number) => `10.0.2.${100 + index}`,
};

/** The host NIC of a machine: restricted unless `internet`, with the named host services. */
export function hostNicFor(name: string, internet: boolean, services: Record<string, number>): HostNicSpec {
  return {
    mac: macAddress(name, 'host'),
    internet,
    ...(internet ? { outboundMac: macAddress(name, 'outbound') } : {}),
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
    ...(config.hostNic.internet
      ? {
          outbound: {
            index: config.nics + 1,
            address: `${MACHINE_OUTBOUND.address}/${MACHINE_OUTBOUND.subnet.split('/')[1]}`,
            gateway: MACHINE_OUTBOUND.gateway,
            nameserver: MACHINE_OUTBOUND.nameserver,
          },
        }
      : {}),
  };
}

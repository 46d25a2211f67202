import { guestScript } from './commands.js';
import type { AgentRestore, BootSetup, RestoreSetup } from './profile.js';

/**
 * The set-up after a boot or a restore as the steps of guest/profiles/setup.sh: the script is the
 * guest knowledge, this only lists what it is told.
 */

/** A freshly booted guest's steps: hostname, NICs, the NIC to the host and out, hosts lines. */
export function bootSteps({ hostname, nics, hostNic, hosts }: BootSetup): string[] {
  const steps = ['hostname', hostname];
  for (const nic of nics) steps.push('nic', String(nic.index), nic.mac ?? '', nic.address ?? '');
  if (hostNic) {
    steps.push(
      'hostnic',
      String(hostNic.index),
      hostNic.address,
      hostNic.gateway ?? '',
      hostNic.nameserver ?? '',
    );
    const out = hostNic.outbound;
    if (out) steps.push('outbound', String(out.index), out.address, out.gateway, out.nameserver);
  }
  return [...steps, ...hostSteps(hosts)];
}

/** A restored guest's steps: clock, hostname if it changed, entropy, renumbered NICs, hosts lines. */
export function restoreSteps(setup: RestoreSetup): string[] {
  const steps = ['clock', String(setup.clockSeconds)];
  if (setup.hostname !== undefined) steps.push('hostname', setup.hostname);
  steps.push('entropy', setup.entropyHex);
  return [...steps, ...networkSteps(setup)];
}

/** What only a script does after a restore: renumbered NICs and hosts lines. */
function networkSteps(setup: RestoreSetup): string[] {
  const steps: string[] = [];
  for (const nic of setup.renumber) steps.push('renumber', String(nic.index), nic.mac, nic.address ?? '');
  return [...steps, ...hostSteps(setup.hosts)];
}

/**
 * A restore's set-up with the clock, hostname and entropy left to the agent; `systemd`: it also
 * writes the hostname to /etc/hostname and /etc/hosts, and a new machine ID to /etc/machine-id.
 * The script keeps the network steps.
 */
export function agentRestore(setup: RestoreSetup, systemd: boolean): AgentRestore | undefined {
  if (setup.hostname === '') return undefined; // not a name: the script's steps say how it fails
  const rest = networkSteps(setup);
  return {
    identity: {
      ...(setup.hostname === undefined ? {} : { hostname: setup.hostname }),
      hostnameFiles: systemd,
      entropy: Buffer.from(setup.entropyHex, 'hex'),
      ...(systemd && setup.machineId !== undefined ? { machineId: setup.machineId } : {}),
    },
    script: rest.length === 0 ? '' : setupScript(rest),
  };
}

/** A systemd guest's own files: /etc/hostname (and 127.0.1.1), /etc/machine-id when it is new. */
export function systemdFileSteps(hostname: string | undefined, machineId: string | undefined): string[] {
  return [
    ...(hostname === undefined ? [] : ['hostname-file', hostname]),
    ...(machineId === undefined ? [] : ['machine-id', machineId]),
  ];
}

function hostSteps(hosts: Record<string, string>): string[] {
  return Object.entries(hosts).flatMap(([host, address]) => ['host', address, host]);
}

/** The script that runs `steps` in the guest. */
export const setupScript = (steps: string[]): string => guestScript('setup.sh', steps);

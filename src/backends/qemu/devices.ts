import { join } from 'node:path';
import { shellQuote } from '../../util/shell.js';
import { OUTBOUND_SOCKET, type OutboundNet, SLIRP_SOCKET } from '../outbound/launch.js';
import type { ReadOnlyDiskSpec, ServiceNicSpec } from '../vmm-spec.js';

/** A value inside a QEMU option string, where a comma must be doubled. */
export const opt = (value: string) => value.replaceAll(',', ',,');

/**
 * The NIC out with MAC `mac` (netdev ids prefixed `prefix`): the guest's side a stream to the
 * relay; a user-mode network with restrict=off, IPv6 off (its host address fec0::2 would be the
 * host's ::1), joined by a hub of two ports to a second stream to the relay. slirp alone would map
 * its host address to the host's loopback (QEMU 7.2 has no switch for libslirp's
 * disable_host_loopback): the relay refuses the frames addressed to the host.
 */
export function outboundArgs(
  prefix: string,
  dir: string,
  net: OutboundNet,
  mac: string,
  hubId: number,
): string[] {
  const stream = (id: string, file: string) =>
    `stream,id=${id},server=off,addr.type=unix,addr.path=${opt(join(dir, file))}`;
  return [
    '-netdev',
    stream(prefix, OUTBOUND_SOCKET),
    '-device',
    `virtio-net-pci,netdev=${prefix},mac=${mac},id=${prefix}nic`,
    '-netdev',
    `user,id=${prefix}slirp,net=${net.subnet},host=${net.gateway},dns=${net.nameserver},ipv6=off,restrict=off`,
    '-netdev',
    stream(`${prefix}back`, SLIRP_SOCKET),
    '-netdev',
    `hubport,id=${prefix}hub0,hubid=${hubId},netdev=${prefix}slirp`,
    '-netdev',
    `hubport,id=${prefix}hub1,hubid=${hubId},netdev=${prefix}back`,
  ];
}

/**
 * A user-mode NIC with restrict=on: the guest reaches no address through it but its guestfwd
 * rule, which runs the endpoint's command per connection. libslirp splits that command as a
 * shell would (g_shell_parse_argv) and runs it without a shell: each argument is shell-quoted,
 * and commas are doubled for QEMU's option parser.
 */
export function serviceNicArgs(nic: ServiceNicSpec): string[] {
  const { endpoint } = nic;
  const rule = endpoint
    ? `,guestfwd=tcp:${endpoint.address}:${endpoint.port}-cmd:${opt(endpoint.command.map(shellQuote).join(' '))}`
    : '';
  return [
    '-netdev',
    `user,id=${nic.id},net=${nic.subnet},host=${nic.hostAddress},restrict=on${rule}`,
    '-device',
    `virtio-net-pci,netdev=${nic.id},mac=${nic.mac},id=${nic.id}nic`,
  ];
}

/** A virtio disk the guest cannot write. */
export function readOnlyDiskArgs(disk: ReadOnlyDiskSpec): string[] {
  return ['-drive', `file=${opt(disk.path)},if=virtio,format=${disk.format},readonly=on,id=${disk.id}`];
}

/**
 * QEMU's seccomp sandbox: no obsolete system calls, no scheduler or resource changes. Spawning
 * stays allowed: QEMU starts `exec:cat` for every save and load of state (this QEMU has no
 * `file:` migration, and an `fd:` one needs a descriptor passed over QMP) and a service NIC's
 * endpoint command for each connection. So does elevateprivileges: it denies setsid too, which
 * libslirp calls in the child of every guestfwd command, so the command would never start (seen:
 * the guest's request gets no response). set*uid and set*gid would gain the VMM nothing where it
 * runs with no capability and no new privileges (a fleet's jail).
 */
export const SANDBOX_ARGS = ['-sandbox', 'on,obsolete=deny,resourcecontrol=deny'];

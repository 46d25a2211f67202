import { shellQuote } from '../../util/shell.js';
import { agentBanner } from '../readiness.js';
import { posixCommands } from './commands.js';
import type { GuestProfile, RestoreSetup } from './profile.js';

/** The tiny image: busybox, the backdoor started by init, no service manager. */
export const tinyProfile: GuestProfile = {
  name: 'tiny',
  readiness: agentBanner,
  commands: posixCommands,

  afterBoot({ hostname, nics, hostNic, hosts }) {
    const lines = [`hostname ${shellQuote(hostname)}`];
    for (const nic of nics) {
      if (nic.mac) lines.push(`ip link set eth${nic.index} address ${nic.mac}`);
      lines.push(`ip link set eth${nic.index} up`);
      if (nic.address) lines.push(`ip addr add ${shellQuote(nic.address)} dev eth${nic.index}`);
    }
    if (hostNic) {
      const dev = `eth${hostNic.index}`;
      lines.push(`ip link set ${dev} up`, `ip addr add ${shellQuote(hostNic.address)} dev ${dev}`);
      if (hostNic.gateway) lines.push(`ip route add default via ${shellQuote(hostNic.gateway)}`);
      if (hostNic.nameserver)
        lines.push(`echo ${shellQuote(`nameserver ${hostNic.nameserver}`)} > /etc/resolv.conf`);
      const out = hostNic.outbound;
      if (out) {
        const outDev = `eth${out.index}`;
        lines.push(
          `ip link set ${outDev} up`,
          `ip addr add ${shellQuote(out.address)} dev ${outDev}`,
          `ip route add default via ${shellQuote(out.gateway)} dev ${outDev}`,
          `echo ${shellQuote(`nameserver ${out.nameserver}`)} > /etc/resolv.conf`,
        );
      }
    }
    return [...lines, ...hostsLines(hosts)].join('\n');
  },

  afterRestore(setup: RestoreSetup) {
    const lines = [
      `date -s @${setup.clockSeconds} > /dev/null`,
      ...(setup.hostname === undefined ? [] : [`hostname ${shellQuote(setup.hostname)}`]),
      `printf '%s' ${setup.entropyHex} > /dev/urandom`,
    ];
    for (const nic of setup.renumber) {
      const dev = `eth${nic.index}`;
      lines.push(
        `ip link set ${dev} down`,
        `ip link set ${dev} address ${nic.mac}`,
        `ip addr flush dev ${dev}`,
        `ip addr add ${shellQuote(nic.address)} dev ${dev}`,
        `ip link set ${dev} up`,
      );
    }
    return [...lines, ...hostsLines(setup.hosts)].join('\n');
  },
};

function hostsLines(hosts: Record<string, string>): string[] {
  return Object.entries(hosts).map(
    ([host, address]) => `echo ${shellQuote(`${address} ${host}`)} >> /etc/hosts`,
  );
}

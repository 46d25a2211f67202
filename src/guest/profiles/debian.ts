import { shellQuote } from '../../util/shell.js';
import { agentBanner } from '../readiness.js';
import { posixCommands } from './commands.js';
import type { GuestProfile } from './profile.js';
import { tinyProfile } from './tiny.js';

/**
 * Debian with systemd: the backdoor is an early systemd unit, so the guest is ready when its
 * banner comes, before the rest of the boot finishes (waitForUnit('multi-user.target') waits for
 * that). Interfaces are eth<n> (net.ifnames=0) and no network manager runs, so addresses, hosts,
 * clock and entropy are set as on tiny, with the same tools; the hostname is also written to
 * /etc/hostname, where systemd and its tools read it, and on 127.0.1.1 in /etc/hosts.
 */
export const debianProfile: GuestProfile = {
  name: 'debian',
  readiness: agentBanner,
  commands: posixCommands,

  afterBoot(setup) {
    return [tinyProfile.afterBoot(setup), hostnameFile(setup.hostname)].join('\n');
  },

  afterRestore(setup) {
    const lines = [tinyProfile.afterRestore(setup)];
    if (setup.hostname !== undefined) lines.push(hostnameFile(setup.hostname));
    return lines.join('\n');
  },
};

/** /etc/hostname, and the name on 127.0.1.1 in /etc/hosts (else sudo looks it up in DNS, and waits). */
function hostnameFile(hostname: string): string {
  return [
    `echo ${shellQuote(hostname)} > /etc/hostname`,
    "sed -i '/^127\\.0\\.1\\.1[[:space:]]/d' /etc/hosts",
    `printf '127.0.1.1\\t%s\\n' ${shellQuote(hostname)} >> /etc/hosts`,
  ].join('\n');
}

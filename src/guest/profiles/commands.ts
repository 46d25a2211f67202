import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { guestFilesDir } from '../../util/paths.js';
import { shellQuote } from '../../util/shell.js';

/**
 * The commands vmkit runs in a guest besides its set-up after boot and restore: each is a POSIX
 * sh file in guest/profiles/, run with its arguments set first (`set -- ...`).
 */
export interface GuestCommands {
  /** Syncs and drops the page cache (before a state is saved, so that it holds fewer pages). */
  dropCaches(): string;
  powerOff(): string;
  reboot(): string;
  /** Exits 0 when something listens on TCP `port` (bound to `address` or to every address, if given). */
  tcpListening(port: number, address?: string): string;
  /** Exits 0 when a unix socket at `path` is listening (stream) or bound (datagram). */
  unixListening(path: string, datagram: boolean): string;
  /** Adds each line to /etc/hosts unless it is there already. */
  ensureHosts(lines: string[]): string;
  /** Refreshes what the guest took from its identity at boot and can take again (see the script). */
  refreshIdentity(): string;
  /** Prints the device of the virtio disk with `serial` (/dev/vdb), waiting up to `waitSeconds` for it; else exits 1. */
  diskWithSerial(serial: string, waitSeconds: number): string;
}

/** A file of guest/profiles/ with its arguments: read when used, so an edit shows at once. */
export function guestScript(file: string, args: string[] = []): string {
  const body = readFileSync(join(guestFilesDir(), 'profiles', file), 'utf8');
  return args.length === 0 ? body : `set -- ${args.map(shellQuote).join(' ')}\n${body}`;
}

/** The commands of guests with a POSIX shell, busybox's or a full system's. */
export const posixCommands: GuestCommands = {
  dropCaches: () => guestScript('drop-caches.sh'),
  powerOff: () => guestScript('power-off.sh'),
  reboot: () => guestScript('reboot.sh'),
  tcpListening(port, address) {
    const hex = port.toString(16).toUpperCase().padStart(4, '0');
    if (!address) return guestScript('tcp-listening.sh', [hex]);
    const ip = address === 'localhost' ? '127.0.0.1' : address;
    // Bound to the address itself, to its family's wildcard, or to IPv6's (dual-stack) one.
    const accepted = [procAddress(ip), isIP(ip) === 4 ? '00000000' : '0'.repeat(32), '0'.repeat(32)];
    return guestScript('tcp-listening.sh', [hex, ...new Set(accepted)]);
  },
  unixListening: (path, datagram) =>
    guestScript('unix-listening.sh', [path, datagram ? 'datagram' : 'stream']),
  ensureHosts: (lines) => guestScript('hosts-ensure.sh', lines),
  refreshIdentity: () => guestScript('refresh-identity.sh'),
  diskWithSerial: (serial, waitSeconds) =>
    guestScript('disk-with-serial.sh', [serial, String(Math.max(0, Math.floor(waitSeconds)))]),
};

/** An address as /proc/net/tcp{,6} writes it: hex, each 32-bit word in host (little-endian) order. */
export function procAddress(address: string): string {
  const le32 = (word: number) =>
    [0, 8, 16, 24].map((shift) => ((word >>> shift) & 0xff).toString(16).padStart(2, '0')).join('');
  if (isIP(address) === 4) {
    const [a = 0, b = 0, c = 0, d = 0] = address.split('.').map(Number);
    return le32(((a << 24) | (b << 16) | (c << 8) | d) >>> 0).toUpperCase();
  }
  const [head = '', rest] = address.split('::');
  const groups = (part: string | undefined) => (part ? part.split(':') : []);
  const missing = 8 - groups(head).length - groups(rest).length;
  const full = [...groups(head), ...Array(rest === undefined ? 0 : missing).fill('0'), ...groups(rest)];
  const words = [0, 1, 2, 3].map(
    (i) => (parseInt(full[2 * i] ?? '0', 16) << 16) | parseInt(full[2 * i + 1] ?? '0', 16),
  );
  return words
    .map((word) => le32(word >>> 0))
    .join('')
    .toUpperCase();
}

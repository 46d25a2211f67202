import { isIP } from 'node:net';
import { z } from 'zod';
import { parseInput, waitOptionsOf, wholeNumber } from '../util/validate.js';
import { retryCommand } from './retry.js';
import type { GuestShell } from './systemd.js';

export interface PortOptions {
  /** Only a socket bound to this address (or to every address) counts; default: any. */
  address?: string;
  timeoutMs?: number;
  attemptTimeoutMs?: number;
}

export interface UnixSocketOptions {
  /** A datagram socket instead of a listening stream socket. */
  datagram?: boolean;
  timeoutMs?: number;
  attemptTimeoutMs?: number;
}

const portOptions = waitOptionsOf(
  {
    address: z
      .string({ error: 'must be an IP address' })
      .refine((text) => text === 'localhost' || isIP(text) !== 0, {
        error: 'must be an IPv4 or IPv6 address',
      })
      .optional(),
  },
  'must be an options object like { address, timeoutMs, attemptTimeoutMs }',
);
const unixOptions = waitOptionsOf(
  { datagram: z.boolean({ error: 'must be true or false' }).optional() },
  'must be an options object like { datagram, timeoutMs, attemptTimeoutMs }',
);
const socketPath = z
  .string({ error: 'must be a path' })
  .regex(/^\/[^\s'"\\]*$/, { error: 'must be an absolute path without spaces or quotes' });

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

/**
 * A shell check that something listens on TCP `port`, read from /proc without connecting. With
 * an address, only sockets bound to it or to the wildcard count.
 */
export function listeningCheck(port: number, address?: string): string {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  if (!address) {
    return `awk '$2 ~ /:${hex}$/ && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null`;
  }
  const ip = address === 'localhost' ? '127.0.0.1' : address;
  const accepted = [procAddress(ip), isIP(ip) === 4 ? '00000000' : '0'.repeat(32), '0'.repeat(32)];
  const match = accepted.map((addr) => `$2 == "${addr}:${hex}"`).join(' || ');
  return `awk '(${match}) && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null`;
}

/** A shell check that a unix socket at `path` is listening (stream) or bound (datagram), from /proc/net/unix. */
export function unixSocketCheck(path: string, datagram: boolean): string {
  // Columns: Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 is __SO_ACCEPTCON.
  const condition = datagram ? '$5 == "0002"' : '$5 == "0001" && $4 == "00010000"';
  return `awk -v p='${path}' '$8 == p && ${condition} { found = 1 } END { exit !found }' /proc/net/unix`;
}

export async function waitForPort(
  machine: GuestShell,
  port: number,
  open: boolean,
  options: PortOptions,
  defaultTimeoutMs: number,
): Promise<void> {
  const method = open ? 'waitForOpenPort' : 'waitForClosedPort';
  parseInput(wholeNumber(1, 65_535), port, `${method}: port`);
  const {
    address,
    timeoutMs: limit = defaultTimeoutMs,
    attemptTimeoutMs,
  } = parseInput(portOptions, options, `${method}: options`);
  const where = address ? ` on ${address}` : '';
  await retryCommand(
    (timeout) => machine.execute(listeningCheck(port, address), { timeoutMs: timeout }),
    `TCP port ${port}${where} to be ${open ? 'listening' : 'closed'} on ${machine.name}`,
    (result) => (result.exitCode === 0) === open,
    limit,
    attemptTimeoutMs,
  );
}

export async function waitForOpenUnixSocket(
  machine: GuestShell,
  path: string,
  options: UnixSocketOptions,
  defaultTimeoutMs: number,
): Promise<void> {
  parseInput(socketPath, path, 'waitForOpenUnixSocket: path');
  const {
    datagram = false,
    timeoutMs: limit = defaultTimeoutMs,
    attemptTimeoutMs,
  } = parseInput(unixOptions, options, 'waitForOpenUnixSocket: options');
  await retryCommand(
    (timeout) => machine.execute(unixSocketCheck(path, datagram), { timeoutMs: timeout }),
    `unix ${datagram ? 'datagram' : 'stream'} socket ${path} to be open on ${machine.name}`,
    (result) => result.exitCode === 0,
    limit,
    attemptTimeoutMs,
  );
}

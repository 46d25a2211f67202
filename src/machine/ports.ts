import { isIP } from 'node:net';
import { z } from 'zod';
import type { GuestCommands } from '../guest/profiles/commands.js';
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

export async function waitForPort(
  machine: GuestShell,
  port: number,
  open: boolean,
  options: PortOptions,
  defaultTimeoutMs: number,
  /** The guest's commands, asked for once the arguments are checked. */
  commands: () => GuestCommands,
): Promise<void> {
  const method = open ? 'waitForOpenPort' : 'waitForClosedPort';
  parseInput(wholeNumber(1, 65_535), port, `${method}: port`);
  const {
    address,
    timeoutMs: limit = defaultTimeoutMs,
    attemptTimeoutMs,
  } = parseInput(portOptions, options, `${method}: options`);
  const where = address ? ` on ${address}` : '';
  const probe = commands().tcpListening(port, address);
  await retryCommand(
    (timeout) => machine.execute(probe, { timeoutMs: timeout }),
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
  /** The guest's commands, asked for once the arguments are checked. */
  commands: () => GuestCommands,
): Promise<void> {
  parseInput(socketPath, path, 'waitForOpenUnixSocket: path');
  const {
    datagram = false,
    timeoutMs: limit = defaultTimeoutMs,
    attemptTimeoutMs,
  } = parseInput(unixOptions, options, 'waitForOpenUnixSocket: options');
  const probe = commands().unixListening(path, datagram);
  await retryCommand(
    (timeout) => machine.execute(probe, { timeoutMs: timeout }),
    `unix ${datagram ? 'datagram' : 'stream'} socket ${path} to be open on ${machine.name}`,
    (result) => result.exitCode === 0,
    limit,
    attemptTimeoutMs,
  );
}

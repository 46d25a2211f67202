import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tail, VmmStartError } from '../../errors.js';
import { nodeEntry } from '../../runtime/node-entry.js';
import { which } from '../../util/which.js';

/**
 * Outbound access: the guest's NIC out goes to a relay of vmkit's (`host.ts`), and the relay to
 * QEMU's own user-mode network (slirp, restrict=off) through a hub; the relay refuses the frames
 * addressed to the host itself (`filter.ts`). slirp alone maps its host address to the host's
 * loopback (QEMU 7.2 has no switch for libslirp's disable_host_loopback) and follows a
 * destination of 127.0.0.1 that a guest's root routes out through its NIC.
 */
export interface OutboundNet {
  /** The NIC's subnet, e.g. "10.0.3.0/24". */
  subnet: string;
  /** The guest's address in it, without the prefix length. */
  address: string;
  /** slirp's own address in it: the guest's gateway. */
  gateway: string;
  /** slirp's resolver address in it (it asks the host's resolver). */
  nameserver: string;
}

/** A machine's NIC out (the one after its restricted NIC to the host, whose subnet is 10.0.2.0/24). */
export const MACHINE_OUTBOUND: OutboundNet = {
  subnet: '10.0.3.0/24',
  address: '10.0.3.15',
  gateway: '10.0.3.2',
  nameserver: '10.0.3.3',
};

/** The relay's sockets in the VMM's folder (QEMU connects to both), and its log. */
export const OUTBOUND_SOCKET = 'out.sock';
export const SLIRP_SOCKET = 'out-slirp.sock';
export const OUTBOUND_LOG = 'outbound.log';

/** The relay's command line for a VMM folder; it names the folder (its sockets). */
export function relayCommand(
  dir: string,
  net: OutboundNet,
  uid?: number,
): { program: string; args: string[] } {
  return nodeEntry(import.meta.url, './host', [
    join(dir, OUTBOUND_SOCKET),
    join(dir, SLIRP_SOCKET),
    net.subnet,
    net.nameserver,
    ...(uid === undefined ? [] : [String(uid)]),
  ]);
}

export interface RelayProcess {
  child: ChildProcess;
  exited: Promise<void>;
}

/**
 * Starts the relay for a machine, tied to this process's life (setpriv --pdeathsig), and
 * resolves once QEMU may connect. It ends by itself when QEMU goes.
 */
export async function startRelay(dir: string, net: OutboundNet, timeoutMs: number): Promise<RelayProcess> {
  const { program, args } = relayCommand(dir, net);
  const setpriv = await which('setpriv');
  const child = setpriv
    ? spawn(setpriv, ['--pdeathsig', 'KILL', '--', program, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = createWriteStream(join(dir, OUTBOUND_LOG));
  let said = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    log.write(chunk);
    said = tail(said + chunk.toString(), 2000);
  });
  const exited = new Promise<void>((resolve) => {
    child.once('error', (error) => {
      said += error.message;
      resolve();
    });
    child.once('exit', () => resolve());
  }).then(() => {
    log.end();
  });
  const ready = new Promise<void>((resolve) => {
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('ready\n')) resolve();
    });
  });
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    ready.then(() => 'ready' as const),
    exited.then(() => 'exited' as const),
    new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (outcome === 'ready') return { child, exited };
  child.kill('SIGKILL');
  await exited;
  throw new VmmStartError(
    `outbound access: the relay ${outcome === 'late' ? `was not ready within ${timeoutMs} ms` : 'exited'}: ${said.trim() || '(it said nothing)'}`,
  );
}

/** Whether the relay of a detached VMM has made its sockets (it then waits for QEMU). */
export function relayReady(dir: string): boolean {
  return existsSync(join(dir, OUTBOUND_SOCKET)) && existsSync(join(dir, SLIRP_SOCKET));
}

/** Every socket file of the relay, to remove when a dead one left them. */
export const relaySockets = (dir: string) => [join(dir, OUTBOUND_SOCKET), join(dir, SLIRP_SOCKET)];

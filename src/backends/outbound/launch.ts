import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { HostToolError, tail, VmmStartError } from '../../errors.js';
import { nodeEntry } from '../../runtime/node-entry.js';
import { which } from '../../util/which.js';

/**
 * Outbound access: the guest's NIC out goes through a relay of vmkit's (`host.ts`) to Debian's
 * passt, which turns the guest's flows into sockets of the host's. QEMU's own user-mode network
 * (slirp) with restrict=off maps its host address to the host's loopback and follows a
 * destination of 127.0.0.1 that a guest's root routes out; passt with --no-map-gw maps nothing,
 * and the relay refuses frames to the host's loopback and own addresses (`filter.ts`).
 */
export interface OutboundNet {
  /** The NIC's subnet, e.g. "10.0.3.0/24". */
  subnet: string;
  /** The guest's address in it, without the prefix length. */
  address: string;
  gateway: string;
  nameserver: string;
}

/** A machine's NIC out (the one after its restricted NIC to the host, whose subnet is 10.0.2.0/24). */
export const MACHINE_OUTBOUND: OutboundNet = {
  subnet: '10.0.3.0/24',
  address: '10.0.3.15',
  gateway: '10.0.3.2',
  nameserver: '10.0.3.3',
};

/** The socket QEMU's outbound NIC connects to, in the VMM's folder. */
export const OUTBOUND_SOCKET = 'out.sock';
export const OUTBOUND_LOG = 'outbound.log';

export const PASST_MISSING =
  'outbound access (internet: true, a tenant with outbound) needs passt, which is not on PATH (on Debian: apt-get install passt)';

/** passt's path, or a one-line HostToolError naming the package. */
export async function passtBinary(): Promise<string> {
  const found = await which('passt');
  if (!found) throw new HostToolError(PASST_MISSING);
  return found;
}

/** The relay's command line for a VMM folder; it names the folder (its sockets). */
export function relayCommand(
  dir: string,
  net: OutboundNet,
  passt: string,
  uid?: number,
): { program: string; args: string[] } {
  return nodeEntry(import.meta.url, './host', [
    join(dir, OUTBOUND_SOCKET),
    net.subnet,
    net.address,
    net.gateway,
    net.nameserver,
    passt,
    ...(uid === undefined ? [] : [String(uid)]),
  ]);
}

/** QEMU's NIC on the relay's socket. */
export function outboundNetdev(id: string, dir: string): string {
  return `stream,id=${id},server=off,addr.type=unix,addr.path=${join(dir, OUTBOUND_SOCKET).replaceAll(',', ',,')}`;
}

export interface RelayProcess {
  child: ChildProcess;
  exited: Promise<void>;
}

/**
 * Starts the relay (and so passt) for a machine, tied to this process's life (setpriv
 * --pdeathsig), and resolves once QEMU may connect. It ends by itself when QEMU goes.
 */
export async function startRelay(dir: string, net: OutboundNet, timeoutMs: number): Promise<RelayProcess> {
  const passt = await passtBinary();
  const { program, args } = relayCommand(dir, net, passt);
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
    `outbound access: the relay to passt ${outcome === 'late' ? `was not ready within ${timeoutMs} ms` : 'exited'}: ${said.trim() || '(it said nothing)'}`,
  );
}

/** Whether the relay of a detached VMM has made its socket (it then waits for QEMU). */
export function relayReady(dir: string): boolean {
  return existsSync(join(dir, OUTBOUND_SOCKET));
}

import { spawn } from 'node:child_process';
import { chownSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';
import { compileRules, refusal } from './filter.js';

/**
 * Entry point of the outbound relay: `host <qemu socket> <subnet> <address> <gateway>
 * <nameserver> <passt> [uid]`. Given a uid (a fleet tenant's, started as root), passt runs as it
 * and the relay becomes it once its socket is made and handed to that uid. It starts passt on a socket pair (-F: passt exits when the relay's end
 * closes, however the relay ends; no socket file for passt to guard), listens for QEMU's
 * `-netdev stream` and prints "ready"; then it passes QEMU's frames to passt through the filter
 * (`filter.ts`) and passt's frames back. When either side goes, it ends passt and exits; QEMU
 * must connect within a minute.
 */
const [qemuSocket, subnet, address, gateway, nameserver, passt, uidArg] = process.argv.slice(2);
const uid = uidArg === undefined ? undefined : Number(uidArg);
if (!qemuSocket || !subnet || !address || !gateway || !nameserver || !passt) {
  process.stderr.write('usage: host <qemu socket> <subnet> <address> <gateway> <nameserver> <passt>\n');
  process.exit(2);
}
const MAX_FRAME = 65_536 + 4;
const CONNECT_MS = 60_000;

const hostAddresses = Object.values(networkInterfaces())
  .flat()
  .flatMap((entry) => (entry ? [entry.address] : []));
const rules = compileRules({ subnet, nameserver, hostAddresses });
const bits = subnet.split('/')[1] ?? '24';

// passt: its end of the socket pair as fd 3, no port forwarded in, the gateway not mapped to
// the host. (passt 2023-03's --debug crashes it at the first TCP flow: never pass -d.)
const passtArgs = ['-q', '-f', '-F', '3', '--no-map-gw', '-t', 'none', '-u', 'none'];
passtArgs.push('-a', address, '-n', bits, '-g', gateway, '--dns-forward', nameserver);
if (uid !== undefined) passtArgs.push('--runas', `${uid}:${uid}`);
// Node's stdio pipes are unix socket pairs: fd 3 is the frame stream QEMU would otherwise open.
const child = spawn(passt, passtArgs, { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
const upstream = child.stdio[3] as Socket;
let passtSaid = '';
child.stderr?.on('data', (chunk: Buffer) => {
  passtSaid = (passtSaid + chunk.toString()).slice(-2000);
  process.stderr.write(chunk);
});
let ending = false;
const end = (code: number, why?: string) => {
  if (ending) return;
  ending = true;
  if (why) process.stderr.write(`outbound relay: ${why}\n`);
  try {
    child.kill('SIGKILL');
  } catch {} // passt exits anyway once its end of the pair closes
  try {
    rmSync(qemuSocket, { force: true });
  } catch {} // gone already, or out of reach once the relay dropped root
  process.exit(code);
};
child.once('error', (error) => end(3, `passt did not start: ${error.message}`));
child.once('exit', (code, signal) =>
  end(
    3,
    `passt exited (${signal ?? `status ${code}`})${passtSaid ? `: ${passtSaid.trim().split('\n').pop()}` : ''}`,
  ),
);
process.on('SIGTERM', () => end(0));
process.on('SIGINT', () => end(0));

/** QEMU's frames, each a 4-byte big-endian length and the frame, minus the refused ones. */
class FrameFilter extends Transform {
  private pending: Buffer = Buffer.alloc(0);
  private refused = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    while (this.pending.length >= 4) {
      const length = this.pending.readUInt32BE(0);
      if (length + 4 > MAX_FRAME) {
        done(new Error(`a frame of ${length} bytes`));
        return;
      }
      if (this.pending.length < 4 + length) break;
      const framed = this.pending.subarray(0, 4 + length);
      this.pending = this.pending.subarray(4 + length);
      const why = refusal(framed.subarray(4), rules);
      if (why === undefined) this.push(framed);
      else if (this.refused++ < 20) process.stderr.write(`outbound relay: refused ${why}\n`);
    }
    done();
  }
}

try {
  rmSync(qemuSocket, { force: true });
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(qemuSocket, resolve);
  });
  if (uid !== undefined) chownSync(qemuSocket, uid, uid); // QEMU runs as the tenant's uid
  const timer = setTimeout(() => end(4, `QEMU did not connect within ${CONNECT_MS / 1000} s`), CONNECT_MS);
  server.once('connection', (guest: Socket) => {
    clearTimeout(timer);
    server.close();
    rmSync(qemuSocket, { force: true });
    if (uid !== undefined) {
      // Before the first frame: nothing here needs root any more.
      process.setgroups?.([]);
      process.setgid?.(uid);
      process.setuid?.(uid);
    }
    const filter = new FrameFilter();
    for (const socket of [guest, upstream]) {
      socket.on('error', () => end(0));
      socket.on('close', () => end(0));
    }
    filter.on('error', (error) => end(5, `QEMU's stream: ${error.message}`));
    guest.pipe(filter).pipe(upstream);
    upstream.pipe(guest);
  });
  process.stdout.write('ready\n');
} catch (error) {
  end(3, (error as Error).message);
}

import { chownSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';
import { compileRules, refusal } from './filter.js';

/**
 * Entry point of the outbound relay: `host <guest socket> <slirp socket> <subnet> <nameserver>
 * [uid]`. It listens on both sockets and prints "ready"; QEMU then connects the guest's NIC to
 * the first and its user-mode network (through a hub) to the second. Frames from the guest pass
 * to slirp only through the filter (`filter.ts`); slirp's frames pass back as they are. When
 * either side goes it exits; QEMU must connect within a minute. Given a uid (a fleet tenant's,
 * started as root), it hands both sockets to that uid and becomes it before the first frame.
 */
const [guestSocket, slirpSocket, subnet, nameserver, uidArg] = process.argv.slice(2);
if (!guestSocket || !slirpSocket || !subnet || !nameserver) {
  process.stderr.write('usage: host <guest socket> <slirp socket> <subnet> <nameserver> [uid]\n');
  process.exit(2);
}
const uid = uidArg === undefined ? undefined : Number(uidArg);
const MAX_FRAME = 65_536 + 4;
const CONNECT_MS = 60_000;

const hostAddresses = Object.values(networkInterfaces())
  .flat()
  .flatMap((entry) => (entry ? [entry.address] : []));
const rules = compileRules({ subnet, nameserver, hostAddresses });

let ending = false;
const end = (code: number, why?: string) => {
  if (ending) return;
  ending = true;
  if (why) process.stderr.write(`outbound relay: ${why}\n`);
  for (const path of [guestSocket, slirpSocket]) {
    try {
      rmSync(path, { force: true });
    } catch {} // gone already, or out of reach once the relay dropped root
  }
  process.exit(code);
};
process.on('SIGTERM', () => end(0));
process.on('SIGINT', () => end(0));

/** The guest's frames, each a 4-byte big-endian length and the frame, minus the refused ones. */
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

/** Listens on `path` for one connection. */
async function listenOnce(path: string): Promise<{ server: Server; accepted: Promise<Socket> }> {
  rmSync(path, { force: true });
  const server = createServer();
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  if (uid !== undefined) chownSync(path, uid, uid); // QEMU runs as the tenant's uid
  return { server, accepted };
}

try {
  const [guestSide, slirpSide] = await Promise.all([listenOnce(guestSocket), listenOnce(slirpSocket)]);
  const timer = setTimeout(() => end(4, `QEMU did not connect within ${CONNECT_MS / 1000} s`), CONNECT_MS);
  process.stdout.write('ready\n');
  const [guest, slirp] = await Promise.all([guestSide.accepted, slirpSide.accepted]);
  clearTimeout(timer);
  for (const { server } of [guestSide, slirpSide]) server.close();
  rmSync(guestSocket, { force: true });
  rmSync(slirpSocket, { force: true });
  if (uid !== undefined) {
    // Before the first frame: nothing here needs root any more.
    process.setgroups?.([]);
    process.setgid?.(uid);
    process.setuid?.(uid);
  }
  const filter = new FrameFilter();
  for (const socket of [guest, slirp]) {
    socket.on('error', () => end(0));
    socket.on('close', () => end(0));
  }
  filter.on('error', (error) => end(5, `the guest's stream: ${error.message}`));
  guest.pipe(filter).pipe(slirp);
  slirp.pipe(guest);
} catch (error) {
  end(3, (error as Error).message);
}

import { createHash } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { waitWithin } from './time.js';

/** A turn held: `release` hands it on (it is also released when the holding process ends). */
export interface Turn {
  release(): void;
}

/**
 * The abstract unix socket name of a turn (Linux: no file, gone with the process that bound it,
 * scoped to the network namespace, so a jailed VMM with its own cannot take or hold one).
 */
const socketName = (key: string) =>
  `\0vmkit-turn-${createHash('sha256').update(key).digest('hex').slice(0, 32)}`;

/**
 * Waits, at most `timeoutMs`, until this call is the only holder of `key` on this host, for a
 * resource that serves one user at a time (a QEMU socket server accepts one client). The holder
 * listens on an abstract socket named after the key: the kernel lets one process bind a name and
 * frees it when that process ends, however it ends, so no stale lock outlives a killed caller.
 * A waiter connects to the holder, which tells it who holds the turn, and tries again once that
 * connection closes (released, or the holder died): no polling. Not first come, first served;
 * every waiter is bounded by its own timeout (and `signal`). `who` says what the turn is taken for.
 */
export async function takeTurn(
  key: string,
  timeoutMs: number,
  awaited: string,
  who: string,
  signal?: AbortSignal,
): Promise<Turn> {
  const name = socketName(key);
  const deadline = Date.now() + timeoutMs;
  let holder = 'another client holds it';
  for (;;) {
    const turn = await tryHold(name, `pid ${process.pid}: ${who}`);
    if (turn) return turn;
    await waitWithin<void>(
      Math.max(0, deadline - Date.now()),
      awaited,
      (resolve) => {
        const socket = connect(name);
        socket.setEncoding('utf8');
        socket.on('data', (text: string) => {
          const line = text.split('\n')[0];
          if (line) holder = `another client holds it (${line})`;
        });
        // Refused: the holder released it between our bind and connect; try again at once.
        socket.on('error', () => setImmediate(resolve));
        socket.on('close', () => resolve());
        return () => socket.destroy();
      },
      { lastState: () => holder, ...(signal ? { signal } : {}) },
    );
  }
}

/** Binds the turn's name: a Turn if it was free, undefined if someone holds it. */
function tryHold(name: string, description: string): Promise<Turn | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    const waiters = new Set<Socket>();
    server.on('connection', (socket) => {
      socket.unref();
      socket.on('error', () => {});
      socket.on('close', () => waiters.delete(socket));
      waiters.add(socket);
      socket.write(`${description}\n`);
    });
    server.once('error', (error: NodeJS.ErrnoException) =>
      error.code === 'EADDRINUSE' ? resolve(undefined) : reject(error),
    );
    server.listen(name, () => {
      server.on('error', () => {});
      // A turn never keeps its process alive: a process that ends releases it anyway.
      server.unref();
      let released = false;
      resolve({
        release: () => {
          if (released) return;
          released = true;
          server.close();
          for (const socket of waiters) socket.destroy();
        },
      });
    });
  });
}

import { rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { NetworkError, VmmStartError } from '../errors.js';
import { privateSocket } from './private.js';

/**
 * Listens on a unix socket for exactly one client (a VMM connecting its chardev). The listener
 * closes and the path is removed once the client is in.
 */
export async function listenOnce(path: string): Promise<{ accepted: Promise<Socket>; close: () => void }> {
  await rm(path, { force: true });
  const server: Server = createServer();
  const accepted = new Promise<Socket>((resolve, reject) => {
    server.once('connection', (socket) => {
      // A VMM that dies resets its sockets; its exit is reported from the process itself, and
      // an unhandled socket error would take the whole host process down.
      socket.on('error', () => {});
      server.close();
      rm(path, { force: true }).catch(() => {});
      resolve(socket);
    });
    server.once('error', (error) => reject(new VmmStartError(`socket ${path}: ${error.message}`)));
  });
  accepted.catch(() => {});
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  privateSocket(path);
  return {
    accepted,
    close: () => {
      server.close();
      rm(path, { force: true }).catch(() => {});
    },
  };
}

/** A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new NetworkError('no port')),
      );
    });
  });
}

/** Resolves with whether `port` on 127.0.0.1 can be bound right now. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

import { lstatSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { TimeoutError, VmmStartError } from '../../errors.js';
import { sleep } from '../../util/time.js';

/**
 * Connects to one of a VMM's unix sockets, retrying until `timeoutMs` while its listener is not
 * up yet (ECONNREFUSED, ENOENT) or is busy: QEMU serves one client per socket and keeps a short
 * backlog, so a connect beyond it fails with EAGAIN while another client holds the socket.
 */
export async function connectVmmSocket(path: string, timeoutMs: number, vmm: string): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  let pause = 5;
  for (;;) {
    try {
      // The VMM's folder may be another uid's: a link there could aim vmkit at any socket.
      if (lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink()) {
        throw new VmmStartError(`${path} is a symbolic link, not the VMM's socket`);
      }
      return await connectOnce(path, Math.max(1, deadline - Date.now()));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const retried = code === 'ECONNREFUSED' || code === 'ENOENT' || code === 'EAGAIN';
      if (!retried || Date.now() > deadline) {
        const busy =
          code === 'EAGAIN'
            ? `: another client holds it (QEMU serves one at a time), for ${timeoutMs} ms`
            : '';
        throw new VmmStartError(`cannot connect to ${path} of ${vmm}${busy}: ${(error as Error).message}`);
      }
      // Bounded backoff: a busy socket frees when its client leaves, which no event announces.
      await sleep(Math.min(pause, Math.max(1, deadline - Date.now())));
      pause = Math.min(pause * 2, 100);
    }
  }
}

function connectOnce(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new TimeoutError(`a connection to ${path}`, timeoutMs));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.on('error', () => {});
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

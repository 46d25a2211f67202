import { rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Machine } from '../machine/machine.js';
import { privateSocket } from '../util/private.js';

/** Socket names in a machine's state folder that `vmkit attach` connects to. */
export const ATTACH_SOCKETS = { shell: 'attach-shell.sock', console: 'attach-console.sock' } as const;

/**
 * Makes a live machine reachable from other terminals while a failed run waits
 * (`--debug-on-failure`): `attach-shell.sock` gives each connection a root shell (a process
 * started through the backdoor), `attach-console.sock` the serial console (what it prints, and
 * what is typed goes to it). Returns the clean-up that closes both.
 */
export async function openAttachPoints(machine: Machine): Promise<() => Promise<void>> {
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const listen = async (name: string, onConnection: (socket: Socket) => void) => {
    const path = join(machine.stateDir, name);
    await rm(path, { force: true });
    // Half-open: the client's end of input must not cut off the output still to come.
    const server = createServer({ allowHalfOpen: true }, (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => socket.destroy());
      onConnection(socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, resolve);
    });
    privateSocket(path); // a root shell in the guest for whoever connects
    servers.push(server);
  };
  await listen(ATTACH_SOCKETS.shell, (socket) => {
    socket.write(`vmkit: root shell on ${machine.name} (no prompt; end with Ctrl-D)\n`);
    machine.spawn('exec sh 2>&1').then(
      (shell) => {
        shell.stdout.pipe(socket); // ends the socket once all output arrived
        socket.on('data', (chunk: Buffer) => shell.stdin.write(chunk));
        socket.on('end', () => shell.stdin.end());
        socket.on('close', () => shell.kill('KILL').catch(() => {}));
      },
      (error: Error) => socket.end(`vmkit: cannot start a shell: ${error.message}\n`),
    );
  });
  await listen(ATTACH_SOCKETS.console, (socket) => {
    socket.write(machine.console.tail(2000));
    const onData = (text: string) => socket.write(text);
    machine.console.on('data', onData);
    socket.on('data', (chunk: Buffer) => machine.sendConsole(chunk.toString('utf8')));
    // The end of what is typed (Ctrl-D) leaves the console: it has no output of its own to finish.
    socket.on('end', () => socket.end());
    socket.on('close', () => machine.console.off('data', onData));
  });
  return async () => {
    for (const socket of sockets) socket.destroy();
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  };
}

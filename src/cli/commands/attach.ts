import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { ATTACH_SOCKETS } from '../../driver/attach.js';
import { ConfigError } from '../../errors.js';
import { runtimeRoot } from '../../util/paths.js';

/** `vmkit attach <run> <machine> [--console]`: joins this terminal to a kept machine. */
export async function attachCommand(
  run: string,
  machine: string,
  options: { console?: boolean },
): Promise<number> {
  if (!/^[0-9]+-[0-9a-f]+$/.test(run))
    throw new ConfigError(`attach: ${JSON.stringify(run)} is not a run id (like 1234-abcdef)`);
  const path = join(
    runtimeRoot(),
    'r',
    run,
    machine,
    options.console ? ATTACH_SOCKETS.console : ATTACH_SOCKETS.shell,
  );
  if (!existsSync(path)) {
    throw new ConfigError(
      `attach: no machine ${machine} waiting in run ${run} (${path} is missing; is the run waiting with --debug-on-failure?)`,
    );
  }
  // Not half-open: once the machine's side ends (the shell exited, the run ended, the console
  // was left), nothing more can come and this side ends too, whether or not stdin is still open.
  const socket = connect({ path });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let failure: Error | undefined;
  socket.on('error', (error: Error) => {
    failure = error;
  });
  socket.pipe(process.stdout);
  process.stdin.pipe(socket);
  await new Promise<void>((resolve) => socket.on('close', () => resolve()));
  process.stdin.unpipe(socket);
  process.stdin.destroy();
  if (failure) process.stderr.write(`vmkit: attach: ${failure.message}\n`);
  return failure ? 1 : 0;
}

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
  const socket = connect({ path, allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.pipe(process.stdout);
  process.stdin.pipe(socket);
  await new Promise<void>((resolve) => socket.on('close', () => resolve()));
  process.stdin.unpipe(socket);
  process.stdin.destroy();
  return 0;
}

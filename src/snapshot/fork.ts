import { ConfigError, describeValue } from '../errors.js';
import type { Machine } from '../machine/machine.js';
import { parseForkOptions } from './options.js';
import type { RestoreOptions } from './restore.js';
import type { Snapshot } from './snapshot.js';

export interface ForkOptions extends Omit<RestoreOptions, 'name'> {
  /** Clone names; default <source>-1, <source>-2, ... */
  names?: string[];
}

/** Starts `count` independent clones of a snapshot at once. All start, or none is left running. */
export async function forkClones(
  snapshot: Snapshot,
  count: number,
  options: ForkOptions = {},
): Promise<Machine[]> {
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > 256)
    throw new ConfigError(`fork count must be a whole number from 1 to 256, not ${describeValue(count)}`);
  options = parseForkOptions(options);
  const names =
    options.names ?? Array.from({ length: count }, (_, i) => `${snapshot.manifest.source}-${i + 1}`);
  if (names.length !== count) throw new ConfigError(`fork got ${names.length} names for ${count} clones`);
  const { names: _names, ...restore } = options;
  const results = await Promise.allSettled(names.map((name) => snapshot.restore({ ...restore, name })));
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  const machines = results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  if (failed) {
    await Promise.allSettled(machines.map((machine) => machine.close()));
    throw failed.reason;
  }
  return machines;
}

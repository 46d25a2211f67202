import { ConfigError } from '../errors.js';
import type { RunLog } from '../util/log.js';
import type { TestBody } from './definition.js';
import type { RunRecorder } from './recorder.js';
import { type ShardSpec, shardOf, type Timings } from './shard.js';

/**
 * The tests of a suite a run runs, in the suite's order: those `grep` matches (none is bad input),
 * then, with `shard`, this shard's part of them, which the ledger records as a `shard` event so
 * that `vmkit report merge` can tell the shards of one suite apart and check they do not overlap.
 */
export function selectTests(
  suite: string,
  tests: Record<string, TestBody>,
  options: { grep?: RegExp; shard?: ShardSpec; timings?: Timings; recorder?: RunRecorder },
  log: RunLog,
): Array<[string, TestBody]> {
  const matching = Object.entries(tests).filter(([name]) => !options.grep || options.grep.test(name));
  if (matching.length === 0) throw new ConfigError(`no test matches ${options.grep}`);
  const { shard, timings } = options;
  if (!shard) return matching;
  const chosen = new Set(
    shardOf(
      matching.map(([name]) => name),
      shard,
      timings,
    ),
  );
  const entries = matching.filter(([name]) => chosen.has(name));
  const label = `${shard.index}/${shard.count}`;
  options.recorder?.ledger.record({
    kind: 'shard',
    name: label,
    detail: {
      suite,
      tests: JSON.stringify(entries.map(([name]) => name)),
      of: String(matching.length),
      balance: timings ? 'timings' : 'count',
    },
  });
  const of = `${matching.length} test${matching.length === 1 ? '' : 's'}${options.grep ? ` matching ${options.grep}` : ''}`;
  if (entries.length === 0) log.line('vmkit', `shard ${label} gets none of the ${of}: nothing to run`);
  else
    log.line(
      'vmkit',
      `shard ${label}: ${entries.length} of ${of}, balanced by ${timings ? 'recorded timings' : 'count'}`,
    );
  return entries;
}

import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ConfigError } from '../errors.js';
import { type LedgerEvent, readLedger } from './ledger.js';
import type { Timings } from './shard.js';

/** One shard's run as it left it: its events and where they came from. */
export interface ShardRun {
  /** What the user named: a run's output folder or its events.jsonl. */
  source: string;
  /** The output folder (screenshots are looked for there). */
  dir: string;
  events: LedgerEvent[];
}

/** Several shards' runs joined into the events of one run of the suite. */
export interface MergedRun {
  suite: string;
  events: LedgerEvent[];
  /** The shards merged, as `i/n`, in order; `all` for a run that was not sharded. */
  shards: string[];
  /** Shards of the split that were not given (`i/n`). */
  missing: string[];
  timings: Timings;
}

/** Reads a shard's events from its output folder (its events.jsonl) or the file itself. */
export async function readShardRun(source: string): Promise<ShardRun> {
  const info = await stat(source).catch((error: NodeJS.ErrnoException) => {
    throw new ConfigError(`${source}: cannot read it: ${error.code ?? error.message}`);
  });
  if (!info.isDirectory() && /\.(xml|html)$/.test(source))
    throw new ConfigError(
      `${source}: give the shard's output folder or its events.jsonl; the merged JUnit XML and HTML report are made from the events`,
    );
  const dir = info.isDirectory() ? source : dirname(source);
  const file = info.isDirectory() ? join(source, 'events.jsonl') : source;
  const events = await readLedger(file).catch((error: NodeJS.ErrnoException) => {
    throw new ConfigError(
      `${source}: no events.jsonl (${error.code ?? error.message}): give the output folder of a run (vmkit run --output)`,
    );
  });
  if (!events.some((event) => event.kind === 'run'))
    throw new ConfigError(`${source}: not the events of a vmkit run (no run event in ${file})`);
  return { source, dir, events };
}

const shardOf = (run: ShardRun) => run.events.find((event) => event.kind === 'shard');
const suiteOf = (run: ShardRun) =>
  shardOf(run)?.detail?.suite ?? run.events.filter((event) => event.kind === 'run').at(-1)?.name ?? '';
const testsOf = (run: ShardRun) => {
  const planned = parsedList(shardOf(run)?.detail?.tests, run.source);
  const ran = run.events.filter((event) => event.kind === 'test' && event.durationMs !== undefined);
  return new Set([...planned, ...ran.map((event) => event.name)]);
};
function parsedList(text: string | undefined, source: string): string[] {
  if (text === undefined) return [];
  try {
    const list = JSON.parse(text) as unknown;
    if (Array.isArray(list) && list.every((name) => typeof name === 'string')) return list;
  } catch {
    // reported below
  }
  throw new ConfigError(
    `${source}: its shard event lists its tests as ${JSON.stringify(text)}, not a JSON list of names`,
  );
}
const runEnd = (run: ShardRun) => run.events.filter((event) => event.kind === 'run').at(-1);
const lengthOf = (run: ShardRun) =>
  runEnd(run)?.durationMs ?? Math.max(0, ...run.events.map((event) => event.at + (event.durationMs ?? 0)));

/**
 * Joins shards of one suite as if one runner had run them one after the other: each shard's steps
 * keep their order and durations, shifted to start where the previous shard ended; one run event
 * closes them, failed if any shard failed (interrupted if any was). Refuses (ConfigError) shards
 * of different suites or splits, a shard given twice, and a test that is in two shards.
 */
export function mergeShardRuns(runs: ShardRun[]): MergedRun {
  if (runs.length === 0) throw new ConfigError('nothing to merge: give the output folders of the shards');
  const suite = suiteOf(runs[0] as ShardRun);
  for (const run of runs) {
    if (suiteOf(run) !== suite)
      throw new ConfigError(
        `${run.source} is a run of suite "${suiteOf(run)}", ${runs[0]?.source} of "${suite}": shards of different suites do not merge`,
      );
  }
  const split = (run: ShardRun) => shardOf(run)?.name.split('/').map(Number) ?? [1, 1];
  const count = split(runs[0] as ShardRun)[1];
  for (const run of runs) {
    if (split(run)[1] !== count)
      throw new ConfigError(
        `${run.source} is shard ${shardOf(run)?.name ?? '(unsharded)'}, ${runs[0]?.source} is ${shardOf(runs[0] as ShardRun)?.name ?? '(unsharded)'}: shards of different splits do not merge`,
      );
  }
  const ordered = [...runs].sort((a, b) => (split(a)[0] as number) - (split(b)[0] as number));
  const owner = new Map<string, ShardRun>();
  const seen = new Map<string, ShardRun>();
  for (const run of ordered) {
    const label = shardOf(run)?.name ?? 'all';
    const twice = seen.get(label);
    if (twice) throw new ConfigError(`shard ${label} is given twice: ${twice.source} and ${run.source}`);
    seen.set(label, run);
    for (const test of testsOf(run)) {
      const other = owner.get(test);
      if (other)
        throw new ConfigError(
          `test "${test}" is in both ${other.source} and ${run.source}: overlapping shards do not merge`,
        );
      owner.set(test, run);
    }
  }
  const events: LedgerEvent[] = [];
  let offset = 0;
  for (const run of ordered) {
    for (const event of run.events) {
      if (event.kind === 'run' || event.kind === 'shard') continue;
      events.push({ ...event, at: event.at + offset });
    }
    offset += lengthOf(run);
  }
  const ends = ordered.map(runEnd);
  const outcome = ends.some((end) => !end || end.outcome === 'interrupted')
    ? 'interrupted'
    : ends.some((end) => end?.outcome !== 'ok')
      ? 'failed'
      : 'ok';
  const shards = ordered.map((run) => shardOf(run)?.name ?? 'all');
  const missing =
    count && count > 1
      ? Array.from({ length: count }, (_, i) => `${i + 1}/${count}`).filter(
          (label) => !shards.includes(label),
        )
      : [];
  events.push({
    kind: 'run',
    name: suite,
    outcome,
    at: 0,
    durationMs: offset,
    time: ordered[0]?.events[0]?.time ?? new Date().toISOString(),
    detail: { shards: shards.join(', ') },
  });
  const timings: Timings = {};
  for (const event of events)
    if (event.kind === 'test' && event.durationMs !== undefined) timings[event.name] = event.durationMs;
  return { suite, events, shards, missing, timings };
}

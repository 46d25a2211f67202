import { readFile, writeFile } from 'node:fs/promises';
import { ConfigError } from '../errors.js';

/** One part of a suite split `count` ways: `index` is 1-based (`--shard 2/3`). */
export interface ShardSpec {
  index: number;
  count: number;
}

/** Recorded durations in milliseconds, by test name. */
export type Timings = Record<string, number>;

/** Parses `i/n` (1 <= i <= n); anything else is a ConfigError. */
export function parseShard(text: string): ShardSpec {
  const match = /^(\d+)\/(\d+)$/.exec(String(text).trim());
  if (!match)
    throw new ConfigError(`--shard ${text}: write it as i/n, e.g. 2/3 (the second of three shards)`);
  const index = Number(match[1]);
  const count = Number(match[2]);
  if (count < 1) throw new ConfigError(`--shard ${text}: there must be at least 1 shard`);
  if (index < 1 || index > count)
    throw new ConfigError(`--shard ${text}: the shard number must be from 1 to ${count}`);
  return { index, count };
}

// Compared by code unit, never by locale: every runner must sort the same way.
const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function median(values: number[]): number {
  if (values.length === 0) return 1;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/**
 * Splits test names into `count` parts that together hold every name once. With timings, longest
 * first onto the least loaded part (ties: by name, then the lower part), a test without a timing
 * weighing the median of those with one; without, by count. Depends only on the set of names and
 * the timings, so every runner computes the same split. Each part keeps the order of `names`.
 */
export function partition(names: string[], count: number, timings?: Timings): string[][] {
  const unique = [...new Set(names)];
  const known = unique.map((name) => timings?.[name]).filter((ms): ms is number => ms !== undefined);
  const fallback = median(known);
  const weight = (name: string) => (timings ? (timings[name] ?? fallback) : 1);
  const order = [...unique].sort((a, b) => weight(b) - weight(a) || byName(a, b));
  const loads = new Array<number>(count).fill(0);
  const part = new Map<string, number>();
  for (const name of order) {
    let lightest = 0;
    for (let i = 1; i < count; i++) if ((loads[i] as number) < (loads[lightest] as number)) lightest = i;
    loads[lightest] = (loads[lightest] as number) + weight(name);
    part.set(name, lightest);
  }
  const parts: string[][] = Array.from({ length: count }, () => []);
  for (const name of unique) parts[part.get(name) as number]?.push(name);
  return parts;
}

/** The names shard `spec` runs. */
export function shardOf(names: string[], spec: ShardSpec, timings?: Timings): string[] {
  return partition(names, spec.count, timings)[spec.index - 1] ?? [];
}

/** What a timings file holds (`--write-timings`, and `timings.json` of `vmkit report merge`). */
export interface TimingsFile {
  format: 1;
  suite: string;
  tests: Timings;
}

/** Reads a timings file; unreadable or malformed is a ConfigError naming the problem. */
export async function readTimings(file: string): Promise<Timings> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(
      `--timings ${file}: cannot read it: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`--timings ${file}: not JSON: ${(error as Error).message}`);
  }
  const tests = (parsed as { tests?: unknown } | null)?.tests;
  if (typeof tests !== 'object' || tests === null || Array.isArray(tests))
    throw new ConfigError(`--timings ${file}: expected { "tests": { "<test name>": <milliseconds> } }`);
  for (const [name, ms] of Object.entries(tests)) {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0)
      throw new ConfigError(
        `--timings ${file}: the duration of ${JSON.stringify(name)} is not a number of milliseconds`,
      );
  }
  return tests as Timings;
}

export async function writeTimings(file: string, suite: string, tests: Timings): Promise<void> {
  const content: TimingsFile = { format: 1, suite, tests };
  await writeFile(file, `${JSON.stringify(content, null, 2)}\n`);
}

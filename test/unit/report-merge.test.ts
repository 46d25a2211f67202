import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { junitXml } from '../../src/driver/junit.js';
import type { LedgerEvent } from '../../src/driver/ledger.js';
import { mergeShardRuns, type ShardRun } from '../../src/driver/merge.js';
import { mergeReports } from '../../src/driver/merge-files.js';
import { partition } from '../../src/driver/shard.js';
import { ConfigError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'vmkit-merge-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const DURATIONS: Record<string, number> = { a: 300, b: 1200, c: 50, d: 700, e: 40, f: 900, g: 10 };
const FAILING = new Set(['d']);

/** The events a run of `tests` leaves, as the runner records them (optionally as shard i/n). */
function runEvents(suite: string, tests: string[], shard?: string): LedgerEvent[] {
  const events: LedgerEvent[] = [];
  const time = '2026-12-06T12:00:00.000Z';
  if (shard)
    events.push({ kind: 'shard', name: shard, at: 0, time, detail: { suite, tests: JSON.stringify(tests) } });
  let at = 100;
  for (const name of tests) {
    const durationMs = DURATIONS[name] ?? 1;
    events.push({
      kind: 'restore',
      machine: 'box',
      test: name,
      name: 'restore box',
      at,
      time,
      durationMs,
      outcome: 'ok',
    });
    if (FAILING.has(name))
      events.push({
        kind: 'failure',
        test: name,
        name: `test "${name}"`,
        at: at + durationMs,
        time,
        outcome: 'failed',
        error: `Error: ${name} broke`,
        detail: { box: 'console tail' },
      });
    events.push({
      kind: 'test',
      test: name,
      name,
      at,
      time,
      durationMs,
      outcome: FAILING.has(name) ? 'failed' : 'ok',
      ...(FAILING.has(name) ? { error: `Error: ${name} broke` } : {}),
    });
    at += durationMs;
  }
  const failed = tests.some((name) => FAILING.has(name));
  events.push({ kind: 'run', name: suite, at: 0, time, durationMs: at, outcome: failed ? 'failed' : 'ok' });
  return events;
}

const shardRuns = (suite: string, count: number): ShardRun[] =>
  partition(Object.keys(DURATIONS), count, DURATIONS).map((tests, i) => ({
    source: `shard-${i + 1}`,
    dir,
    events: runEvents(suite, tests, `${i + 1}/${count}`),
  }));

/** A JUnit report's test results: name, and failed or not, as a sorted list. */
function results(xml: string): string[] {
  return [...xml.matchAll(/<testcase classname="[^"]*" name="([^"]*)" time="([^"]*)"(\/?)>/g)]
    .map(([, name, time, closed]) => `${name} ${time} ${closed ? 'ok' : 'failed'}`)
    .sort();
}

describe('merging shards', () => {
  test('three shards merge into the JUnit results, counts and total time of one unsharded run', () => {
    const merged = mergeShardRuns(shardRuns('suite', 3).reverse());
    const whole = junitXml('suite', runEvents('suite', Object.keys(DURATIONS)));
    const joined = junitXml(merged.suite, merged.events);
    assert.deepEqual(results(joined), results(whole));
    assert.match(joined, /<testsuite name="suite" tests="7" failures="1" errors="0" time="3.200"/);
    assert.match(
      joined,
      /<failure message="Error: d broke">Error: d broke\n--- console of box ---\nconsole tail/,
    );
    assert.deepEqual(merged.shards, ['1/3', '2/3', '3/3']);
    assert.deepEqual(merged.missing, []);
    assert.deepEqual(merged.timings, DURATIONS);
    const run = merged.events.filter((event) => event.kind === 'run');
    assert.equal(run.length, 1);
    assert.equal(run[0]?.outcome, 'failed');
    // The shards' steps follow each other as on one runner: none starts before the previous ends.
    const tests = merged.events.filter((event) => event.kind === 'test');
    for (let i = 1; i < tests.length; i++)
      assert.ok((tests[i]?.at ?? 0) >= (tests[i - 1]?.at ?? 0) + (tests[i - 1]?.durationMs ?? 0));
  });

  test('refuses shards of different suites, of different splits, a shard twice, a test in two shards', () => {
    const refuses = (runs: ShardRun[], message: RegExp) =>
      assert.throws(
        () => mergeShardRuns(runs),
        (error: Error) => error instanceof ConfigError && message.test(error.message),
      );
    const [one, two] = shardRuns('suite', 3) as [ShardRun, ShardRun];
    const other = shardRuns('another suite', 3)[1] as ShardRun;
    refuses(
      [one, other],
      /shard-2 is a run of suite "another suite", shard-1 of "suite": shards of different suites do not merge/,
    );
    refuses(
      [one, shardRuns('suite', 2)[1] as ShardRun],
      /shard-2 is shard 2\/2, shard-1 is 1\/3: shards of different splits/,
    );
    refuses([one, { ...one, source: 'copy' }], /shard 1\/3 is given twice: shard-1 and copy/);
    const overlapping: ShardRun = { source: 'odd', dir, events: runEvents('suite', ['a', 'z'], '2/3') };
    const withA = { ...two, events: runEvents('suite', ['a', 'c'], '1/3') };
    refuses([withA, overlapping], /test "a" is in both shard-2 and odd: overlapping shards do not merge/);
    refuses([], /nothing to merge/);
  });

  test('a missing shard is named; the merge goes on with the others', () => {
    const [one, , three] = shardRuns('suite', 3) as [ShardRun, ShardRun, ShardRun];
    assert.deepEqual(mergeShardRuns([one, three]).missing, ['2/3']);
  });

  test('writes events.jsonl, junit.xml, report.html and timings.json from the shard folders', async () => {
    const folders = shardRuns('suite', 3).map((run, i) => {
      const folder = join(dir, `s${i + 1}`);
      mkdirSync(folder, { recursive: true });
      writeFileSync(
        join(folder, 'events.jsonl'),
        run.events.map((event) => `${JSON.stringify(event)}\n`).join(''),
      );
      return folder;
    });
    const out = join(dir, 'merged');
    const result = await mergeReports(
      [folders[0] as string, join(folders[1] as string, 'events.jsonl'), folders[2] as string],
      out,
    );
    assert.equal(result.files.length, 4);
    assert.match(readFileSync(join(out, 'junit.xml'), 'utf8'), /tests="7" failures="1"/);
    assert.match(readFileSync(join(out, 'report.html'), 'utf8'), /suite: FAILED.*7 tests, 1 failed/s);
    assert.deepEqual(JSON.parse(readFileSync(join(out, 'timings.json'), 'utf8')).tests, DURATIONS);
    await assert.rejects(mergeReports([join(dir, 'nowhere')], out), /nowhere: cannot read it: ENOENT/);
    await assert.rejects(
      mergeReports([dir], out),
      /no events\.jsonl \(ENOENT\): give the output folder of a run/,
    );
    await assert.rejects(
      mergeReports([join(out, 'junit.xml')], out),
      /junit\.xml: give the shard's output folder or its events\.jsonl/,
    );
  });
});

// A suite split over three runners: every test runs once, and the merged report is one run's.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openSnapshot, removeSnapshot } from '../../src/index.js';
import { lacks, runCli } from '../helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'vmkit-shard-vm-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A JUnit report's test results: each test's name and whether it failed, sorted. */
const results = (file: string) =>
  [...readFileSync(file, 'utf8').matchAll(/<testcase classname="[^"]*" name="([^"]*)" time="[^"]*"(\/?)>/g)]
    .map(([, name, closed]) => `${name}: ${closed ? 'ok' : 'failed'}`)
    .sort();

describe('a suite sharded over runners', { skip: lacks('snapshot') }, () => {
  it('1/3, 2/3 and 3/3 run every test once; their merge equals one unsharded run', async () => {
    const whole = await runCli([
      'run',
      '--fresh',
      '--output',
      join(dir, 'whole'),
      '--junit',
      join(dir, 'whole.xml'),
      'test/fixtures/shard-suite.ts',
    ]);
    const id = whole.stderr.match(/setup snapshots taken after \d+ ms: (\S+)/)?.[1];
    try {
      assert.equal(whole.code, 1, whole.stderr);
      assert.match(whole.stderr, /6 passed, 1 failed/);
      const ran: string[] = [];
      const shards: string[] = [];
      for (const index of [1, 2, 3]) {
        const output = join(dir, `shard-${index}`);
        shards.push(output);
        const run = await runCli([
          'run',
          '--shard',
          `${index}/3`,
          '--output',
          output,
          '--junit',
          join(output, 'junit.xml'),
          'test/fixtures/shard-suite.ts',
        ]);
        assert.match(run.stderr, new RegExp(`shard ${index}/3: \\d of 7 tests, balanced by count`));
        assert.match(run.stderr, /reusing setup snapshots/);
        ran.push(
          ...[...run.stderr.matchAll(/\[test\] +(.+?): (ok|FAILED)/g)].map((match) => match[1] as string),
        );
        assert.equal(run.code, run.stderr.includes('charlie fails on purpose: FAILED') ? 1 : 0, run.stderr);
      }
      const every = results(join(dir, 'whole.xml')).map((line) => line.replace(/: (ok|failed)$/, ''));
      assert.deepEqual(ran.sort(), every, 'every test ran in exactly one shard');

      const merged = join(dir, 'merged');
      const merge = await runCli(['report', 'merge', '--out', merged, ...shards]);
      assert.equal(merge.code, 0, merge.stderr);
      assert.match(
        merge.stdout,
        /merged 3 shards \(1\/3, 2\/3, 3\/3\) of "shard fixture": 7 tests, 1 failed/,
      );
      assert.deepEqual(results(join(merged, 'junit.xml')), results(join(dir, 'whole.xml')));
      assert.match(
        readFileSync(join(merged, 'junit.xml'), 'utf8'),
        /<testsuite name="shard fixture" tests="7" failures="1"/,
      );
      assert.match(readFileSync(join(merged, 'report.html'), 'utf8'), /shard fixture: FAILED/);

      // Balanced by the merged timings next time; a shard with no test runs nothing and passes.
      const timed = await runCli([
        'run',
        '--shard',
        '2/3',
        '--timings',
        join(merged, 'timings.json'),
        'test/fixtures/shard-suite.ts',
      ]);
      assert.match(timed.stderr, /shard 2\/3: \d of 7 tests, balanced by recorded timings/);
      const empty = await runCli([
        'run',
        '--shard',
        '9/9',
        '--grep',
        'alpha|bravo',
        'test/fixtures/shard-suite.ts',
      ]);
      assert.equal(empty.code, 0, empty.stderr);
      assert.match(
        empty.stderr,
        /shard 9\/9 gets none of the 2 tests matching \/alpha\|bravo\/: nothing to run/,
      );
      assert.doesNotMatch(empty.stderr, /restored from snapshot/);

      const overlap = await runCli([
        'report',
        'merge',
        '--out',
        join(dir, 'bad'),
        shards[0] as string,
        join(dir, 'whole'),
      ]);
      assert.equal(overlap.code, 2, overlap.stderr);
      assert.match(overlap.stderr, /shards of different splits do not merge/);
    } finally {
      if (id) await removeSnapshot(await openSnapshot(id));
    }
  });
});

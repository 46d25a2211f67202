import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { junitXml } from '../../src/driver/junit.js';
import { selectTests } from '../../src/driver/selection.js';
import { parseShard, partition, readTimings, shardOf, type Timings } from '../../src/driver/shard.js';
import { ConfigError } from '../../src/errors.js';
import { RunLog } from '../../src/util/log.js';
import { runProgram } from '../helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'vmkit-shard-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A small deterministic generator, so a failing case can be reproduced from its seed. */
function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

describe('partition', () => {
  test('the parts hold every test exactly once, for many random suites, splits and timings', () => {
    for (let seed = 1; seed <= 400; seed++) {
      const next = random(seed);
      const names = Array.from(
        { length: Math.floor(next() * 40) },
        (_, i) => `t${Math.floor(next() * 1000)}-${i}`,
      );
      const count = 1 + Math.floor(next() * 8);
      const timings: Timings | undefined =
        next() < 0.5
          ? undefined
          : Object.fromEntries(
              names.filter(() => next() < 0.7).map((name) => [name, Math.floor(next() * 5000)]),
            );
      const parts = partition(names, count, timings);
      assert.equal(parts.length, count);
      const all = parts.flat();
      assert.equal(all.length, names.length, `seed ${seed}: a test is missing or doubled`);
      assert.deepEqual([...all].sort(), [...names].sort(), `seed ${seed}`);
      for (const part of parts) {
        // each part keeps the suite's order
        assert.deepEqual(
          part,
          names.filter((name) => part.includes(name)),
          `seed ${seed}`,
        );
      }
      // Every runner gets the same split, whatever order it sees the tests or timings in.
      const shuffled = [...names].reverse();
      const reordered = timings ? Object.fromEntries(Object.entries(timings).reverse()) : undefined;
      const again = partition(shuffled, count, reordered).map((part) => [...part].sort());
      assert.deepEqual(
        again,
        parts.map((part) => [...part].sort()),
        `seed ${seed}: not deterministic`,
      );
      if (!timings) {
        const sizes = parts.map((part) => part.length);
        assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `seed ${seed}: by count, sizes ${sizes}`);
      }
    }
  });

  test('balanced by recorded durations: longest first onto the least loaded part', () => {
    const timings = { slow: 9000, mid: 5000, a: 1000, b: 1000, c: 1000, d: 1000 };
    const parts = partition(Object.keys(timings), 2, timings);
    const load = (part: string[]) =>
      part.reduce((sum, name) => sum + (timings[name as keyof typeof timings] ?? 0), 0);
    assert.deepEqual(parts.map(load), [9000, 9000]);
    assert.deepEqual(parts[0], ['slow']);
    // By count instead, the same suite splits 3 and 3.
    assert.deepEqual(
      partition(Object.keys(timings), 2).map((part) => part.length),
      [3, 3],
    );
  });

  test('a test missing from the timings weighs the median of the known ones', () => {
    const timings = { x: 100, y: 200, z: 9000 };
    // new weighs 200 (the median), so it goes with x (100) rather than onto z's part
    const parts = partition(['x', 'y', 'z', 'new'], 2, timings);
    assert.deepEqual(parts, [['z'], ['x', 'y', 'new']]);
  });

  test('more shards than tests: the extra shards are empty', () => {
    assert.deepEqual(partition(['a', 'b'], 4), [['a'], ['b'], [], []]);
    assert.deepEqual(shardOf(['a', 'b'], { index: 4, count: 4 }), []);
  });
});

describe('--shard and --timings input', () => {
  test('i/n with 1 <= i <= n; anything else is a ConfigError naming it', () => {
    assert.deepEqual(parseShard('2/3'), { index: 2, count: 3 });
    assert.deepEqual(parseShard('1/1'), { index: 1, count: 1 });
    for (const [bad, message] of [
      ['0/3', /--shard 0\/3: the shard number must be from 1 to 3/],
      ['4/3', /--shard 4\/3: the shard number must be from 1 to 3/],
      ['a/b', /--shard a\/b: write it as i\/n/],
      ['1/0', /at least 1 shard/],
      ['-1/3', /write it as i\/n/],
      ['1.5/3', /write it as i\/n/],
    ] as const) {
      assert.throws(
        () => parseShard(bad),
        (error: Error) => error instanceof ConfigError && message.test(error.message),
      );
    }
  });

  test('a timings file that cannot be read or is malformed is a ConfigError naming the problem', async () => {
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    assert.deepEqual(await readTimings(file('ok.json', '{"format":1,"suite":"s","tests":{"a":12}}')), {
      a: 12,
    });
    const cases: Array<[string, RegExp]> = [
      [join(dir, 'missing.json'), /cannot read it: ENOENT/],
      [file('garbage.json', 'not json'), /not JSON/],
      [file('list.json', '{"tests":[1,2]}'), /expected \{ "tests"/],
      [file('word.json', '{"tests":{"a":"slow"}}'), /the duration of "a" is not a number/],
      [file('negative.json', '{"tests":{"a":-5}}'), /the duration of "a" is not a number/],
    ];
    for (const [path, message] of cases)
      await assert.rejects(
        readTimings(path),
        (error: Error) => error instanceof ConfigError && message.test(error.message),
      );
  });
});

describe("selecting a suite's tests", () => {
  const body = async () => {};
  const tests = { one: body, two: body, three: body, four: body };

  test('grep first, then the shard of what matched', () => {
    const log = new RunLog();
    const lines: string[] = [];
    log.taps.add((_source, message) => lines.push(message));
    const names = (shard: { index: number; count: number }) =>
      selectTests('s', tests, { grep: /o/, shard }, log).map(([name]) => name);
    assert.deepEqual([...names({ index: 1, count: 2 }), ...names({ index: 2, count: 2 })].sort(), [
      'four',
      'one',
      'two',
    ]);
    assert.match(lines.join('\n'), /shard 1\/2: 2 of 3 tests matching \/o\/, balanced by count/);
  });

  test('an empty shard says it runs nothing; its JUnit holds no test, not a failure', () => {
    const log = new RunLog();
    const lines: string[] = [];
    log.taps.add((_source, message) => lines.push(message));
    assert.deepEqual(selectTests('s', tests, { shard: { index: 6, count: 6 } }, log), []);
    assert.match(lines.join('\n'), /shard 6\/6 gets none of the 4 tests: nothing to run/);
    const events = [
      { kind: 'shard', name: '6/6', at: 0, time: '', detail: { suite: 's', tests: '[]' } },
      { kind: 'run', name: 's', at: 0, time: '', outcome: 'ok' as const, durationMs: 1 },
    ];
    assert.match(junitXml('s', events), /tests="0" failures="0"/);
    // Without the shard event (an unsharded run that ran nothing) the run itself is the case.
    assert.match(junitXml('s', events.slice(1)), /tests="1" failures="0"/);
  });
});

describe('vmkit run --shard on the command line', () => {
  const run = (args: string[]) =>
    runProgram(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'run', ...args], {
      timeoutMs: 60_000,
    });

  test('bad input is exit 2 with one line, before any machine starts', async () => {
    for (const [args, message] of [
      [['--shard', '4/3'], /vmkit: --shard 4\/3: the shard number must be from 1 to 3/],
      [['--shard', 'a/b'], /vmkit: --shard a\/b: write it as i\/n/],
      [
        ['--shard', '1/2', '--timings', join(dir, 'none.json')],
        /vmkit: --timings .*none\.json: cannot read it: ENOENT/,
      ],
      [['--timings', join(dir, 'none.json')], /vmkit: --timings balances shards: give --shard i\/n too/],
    ] as const) {
      const result = await run(['test/fixtures/shard-suite.ts', ...args]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, message);
      assert.doesNotMatch(result.stderr, /restored|booting/);
    }
    const single = await run(['test/fixtures/pass.ts', '--shard', '1/2']);
    assert.equal(single.code, 2, single.stderr);
    assert.match(
      single.stderr,
      /--shard splits the tests of a suite \(tests: \{\.\.\.\}\); test\/fixtures\/pass\.ts has a single test/,
    );
  });
});

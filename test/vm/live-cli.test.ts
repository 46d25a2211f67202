// vmkit run --verbose / --console: command output in the log as the guest produces it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runCli } from '../helpers.js';

/** The log's elapsed seconds on the first line matching `pattern`. */
function secondsOf(log: string, pattern: RegExp): number {
  const line = log.split('\n').find((candidate) => pattern.test(candidate));
  assert.ok(line, `no log line matches ${pattern}:\n${log}`);
  return Number(line.trim().split('s ')[0]);
}

describe('vmkit run shows command output live', () => {
  it('--verbose: each command, its output line by line as it comes, prefixed by machine, and its end', async () => {
    const { code, stderr } = await runCli(['run', '--verbose', 'test/fixtures/stream.ts']);
    assert.equal(code, 0, stderr);
    assert.match(stderr, /\[talker\] +\$ for i in 1 2 3/);
    assert.match(stderr, /\[talker\] +> line 1\n/);
    assert.match(stderr, /\[talker\] +! done\n/);
    assert.match(stderr, /\[talker\] +exit 0 after \d+ ms/);
    // Logged as produced: the lines came a second apart, not all at the end.
    const first = secondsOf(stderr, /> line 1/);
    const last = secondsOf(stderr, /> line 3/);
    assert.ok(last - first >= 1.5, `line 1 at ${first} s, line 3 at ${last} s`);
  });

  it('--console: command output, without the command lines', async () => {
    const { code, stderr } = await runCli(['run', '--console', 'test/fixtures/stream.ts']);
    assert.equal(code, 0, stderr);
    assert.match(stderr, /\[talker\] +> line 2\n/);
    assert.doesNotMatch(stderr, /\$ for i in/);
  });
});

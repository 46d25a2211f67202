// Suites: boot and set up once, every test on a fresh clone, setup snapshots reused by later runs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openSnapshot, removeSnapshot } from '../../src/index.js';
import { lacks, runCli } from '../helpers.js';

describe('suites of tests on clones', { skip: lacks('snapshot') }, () => {
  it('runs every test on a clean clone, reports each, reuses the setup snapshot next time', async () => {
    const first = await runCli(['run', '--fresh', 'test/fixtures/suite.ts']);
    assert.equal(first.code, 1, first.stderr);
    assert.match(first.stderr, /booting solo once for setup/);
    assert.match(first.stderr, /dirties the machine: ok/);
    assert.match(
      first.stderr,
      /fails on purpose: FAILED: CommandFailedError: command "echo about to fail; exit 9" exited with status 9/,
    );
    assert.match(first.stderr, /still finds it clean: ok/);
    assert.match(first.stderr, /2 passed, 1 failed/);
    const id = first.stderr.match(/setup snapshots taken after \d+ ms: (\S+)/)?.[1];
    assert.ok(id, 'the log names the setup snapshot');

    try {
      const second = await runCli(['run', 'test/fixtures/suite.ts']);
      assert.equal(second.code, 1, second.stderr);
      assert.match(second.stderr, new RegExp(`reusing setup snapshots ${id.replaceAll('.', '\\.')}`));
      assert.doesNotMatch(second.stderr, /once for setup/);
      assert.match(second.stderr, /2 passed, 1 failed/);
    } finally {
      await removeSnapshot(await openSnapshot(id));
    }
  });

  it('restores networked machines onto a LAN of their own per test, addresses and services intact', async () => {
    const run = await runCli(['run', '--fresh', 'test/fixtures/lan-suite.ts']);
    try {
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stderr, /2 passed, 0 failed/);
    } finally {
      const ids = run.stderr.match(/setup snapshots taken after \d+ ms: (.+)/)?.[1]?.split(', ') ?? [];
      for (const id of ids) await removeSnapshot(await openSnapshot(id));
    }
  });

  it('fails a test that outlives testTimeoutMs and goes on; --grep selects tests', async () => {
    const run = await runCli(['run', '--fresh', '--grep', 'hangs|after', 'test/fixtures/slow-suite.ts']);
    try {
      assert.equal(run.code, 1, run.stderr);
      assert.match(
        run.stderr,
        /hangs past its timeout: FAILED: TimeoutError: timed out after 3000 ms waiting for test "hangs past its timeout"/,
      );
      assert.match(run.stderr, /runs after the hung one: ok/);
      assert.doesNotMatch(run.stderr, /filtered out/);
      assert.match(run.stderr, /1 passed, 1 failed/);
    } finally {
      const ids = run.stderr.match(/setup snapshots taken after \d+ ms: (.+)/)?.[1]?.split(', ') ?? [];
      for (const id of ids) await removeSnapshot(await openSnapshot(id));
    }
    const none = await runCli(['run', '--grep', 'nothing-like-this', 'test/fixtures/slow-suite.ts']);
    assert.equal(none.code, 1, none.stderr);
    assert.match(none.stderr, /no test matches \/nothing-like-this\//);
    assert.doesNotMatch(none.stderr, /booting/);
  });

  it('lists and removes snapshots from the command line', async () => {
    const none = await runCli(['snapshot', 'rm', 'no-such-snapshot']);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no snapshot "no-such-snapshot"/);
    const list = await runCli(['snapshot', 'list']);
    assert.equal(list.code, 0, list.stderr);
  });
});

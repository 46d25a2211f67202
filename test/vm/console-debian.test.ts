// A real distribution over its serial console: Debian built from a recipe, no backdoor, driven
// by `vmkit run` as a user would; the ledger and the diagnostics bundle it leaves are checked.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readLedger } from '../../src/driver/ledger.js';
import { DELIBERATE } from '../fixtures/console-debian.js';
import { lacks, runCli } from '../helpers.js';

describe('debian over its serial console', { skip: lacks('consoleInput') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-console-debian-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('logs in, escalates with sudo, runs commands; every console step in the ledger, a bundle on failure', async () => {
    const run = await runCli(
      ['run', 'test/fixtures/console-debian.ts', '--output', dir, '--report', dir],
      {},
      1_500_000,
    );
    assert.equal(run.code, 1, run.stderr);
    assert.ok(run.stderr.includes(DELIBERATE), run.stderr.slice(-3000));
    const events = await readLedger(join(dir, 'events.jsonl'));
    const subtests = events.filter((event) => event.kind === 'subtest');
    assert.deepEqual(
      subtests.map((event) => event.outcome),
      ['ok', 'ok', 'ok', 'failed'],
      JSON.stringify(subtests),
    );

    const steps = events.filter((event) => event.kind === 'console-step' && event.machine === 'deb');
    const named = (name: string) => steps.filter((step) => step.name === name);
    assert.deepEqual(
      named('login: alice').map((step) => step.outcome),
      ['failed', 'ok'],
      'the wrong password, then the right one',
    );
    assert.match(String(named('login: alice')[0]?.error), /wrong user or password/);
    assert.equal(named('escalate: sudo')[0]?.outcome, 'ok');
    assert.ok(steps.some((step) => step.name === 'prompt: a login or shell prompt'));
    const three = named('command: echo on-the-console; exit 3')[0];
    assert.equal(three?.exitCode, 3);
    assert.equal(three?.stdout, 'on-the-console\n');
    for (const step of steps) assert.equal(typeof step.durationMs, 'number', step.name);

    const bundle = join(dir, 'diagnostics', 'deb');
    const transcript = readFileSync(join(bundle, 'transcript.txt'), 'utf8');
    assert.match(transcript, /> sudo -i/);
    assert.match(transcript, /< .*login: /);
    // Collected through the console shell: the guest has no backdoor.
    assert.match(readFileSync(join(bundle, 'systemctl-failed.txt'), 'utf8'), /UNIT|0 loaded units/);
    assert.match(readFileSync(join(bundle, 'journal-tail.txt'), 'utf8'), /\w/);
    assert.match(readFileSync(join(bundle, 'dmesg.txt'), 'utf8'), /Linux version/);
    assert.ok(existsSync(join(bundle, 'console.raw.log')));
    assert.match(
      readFileSync(join(dir, 'report.html'), 'utf8'),
      /console-step: command: echo on-the-console/,
    );
  });
});

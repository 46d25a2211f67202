import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { PNG } from 'pngjs';
import { htmlReport } from '../../src/driver/html-report.js';
import { junitXml } from '../../src/driver/junit.js';
import type { LedgerEvent } from '../../src/driver/ledger.js';
import { RunRecorder } from '../../src/driver/recorder.js';

/** A ledger of a 100-test suite in which test 42 failed. */
function suiteLedger(): LedgerEvent[] {
  const events: LedgerEvent[] = [];
  let at = 0;
  const push = (event: Omit<LedgerEvent, 'time' | 'at'>) => {
    events.push({ time: new Date(1_700_000_000_000 + at).toISOString(), at, ...event });
    at += event.durationMs ?? 1;
  };
  push({ kind: 'boot', machine: 'box', name: 'boot box', durationMs: 4000, outcome: 'ok' });
  for (let i = 1; i <= 100; i++) {
    const test = `test ${i} <&>`;
    const failed = i === 42;
    push({ kind: 'restore', machine: 'box', name: 'restore box', durationMs: 250, outcome: 'ok', test });
    push({
      kind: 'command',
      machine: 'box',
      name: `echo ${i}`,
      durationMs: 20,
      exitCode: failed ? 1 : 0,
      outcome: 'ok',
      stdout: `out ${i}\n`,
      test,
    });
    if (failed)
      push({
        kind: 'failure',
        name: `test "${test}"`,
        outcome: 'failed',
        error: 'CommandFailedError: boom',
        detail: { box: 'kernel: oops' },
        test,
      });
    push({
      kind: 'test',
      name: test,
      durationMs: 300,
      outcome: failed ? 'failed' : 'ok',
      test,
      ...(failed ? { error: 'CommandFailedError: boom' } : {}),
    });
  }
  push({ kind: 'run', name: 'suite', durationMs: at, outcome: 'failed' });
  return events;
}

describe('JUnit XML', () => {
  test('one testcase per test, the failure with its message and console tail, valid XML', () => {
    const xml = junitXml('suite "quoted"', suiteLedger());
    assert.equal(XMLValidator.validate(xml), true);
    const suite = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '' }).parse(xml).testsuites
      .testsuite;
    assert.equal(suite.tests, '100');
    assert.equal(suite.failures, '1');
    const failed = suite.testcase.find((unit: { failure?: unknown }) => unit.failure);
    assert.equal(failed.name, 'test 42 <&>');
    assert.equal(failed.failure.message, 'CommandFailedError: boom');
    assert.match(failed.failure['#text'], /console of box ---\nkernel: oops/);
  });

  test('a single test reports its subtests, and an interrupted run says so', () => {
    const xml = junitXml('one', [
      { time: '', at: 0, kind: 'subtest', name: 'first', durationMs: 5, outcome: 'ok' },
      {
        time: '',
        at: 5,
        kind: 'subtest',
        name: 'second',
        durationMs: 5,
        outcome: 'failed',
        error: 'Error: no',
      },
      { time: '', at: 10, kind: 'run', name: 'one', durationMs: 10, outcome: 'interrupted' },
    ]);
    const suite = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '' }).parse(xml).testsuites
      .testsuite;
    assert.deepEqual(
      suite.testcase.map((unit: { name: string }) => unit.name),
      ['first', 'second'],
    );
    assert.equal(suite.interrupted, 'true');
  });
});

describe('HTML report', () => {
  test('100 tests: a table of all, passed ones folded, the failed one open and highlighted', () => {
    const html = htmlReport('suite', suiteLedger());
    assert.match(html, /suite: FAILED/);
    assert.match(html, /100 tests, 1 failed/);
    assert.equal(html.match(/<tr><td><a href="#t-/g)?.length, 100);
    assert.equal(html.match(/<details class="test" id="t-[^"]*" open>/g)?.length, 1);
    assert.match(html, /<details class="test" id="t-test_42____" open>/);
    assert.match(html, /class="failure"><h2>Failure in test 42 &lt;&amp;&gt;/);
    assert.match(html, /kernel: oops/);
    assert.doesNotMatch(html, /<script|<link|src="http/);
  });
});

describe('screenshots in the HTML report', () => {
  test('PNGs the run left in its output folder are shown inline, oldest first', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-report-'));
    try {
      const png = PNG.sync.write(new PNG({ width: 2, height: 2 }));
      mkdirSync(join(dir, 'out', 'web'), { recursive: true });
      writeFileSync(join(dir, 'out', 'web', 'login.png'), png);
      writeFileSync(join(dir, 'out', 'first.png'), png);
      utimesSync(join(dir, 'out', 'first.png'), new Date(1000), new Date(1000));
      writeFileSync(join(dir, 'out', 'notes.txt'), 'not an image');
      const recorder = await RunRecorder.create(join(dir, 'out'), 'shots', {
        reportDir: join(dir, 'report'),
      });
      await recorder.finish('ok', 10);
      const html = readFileSync(join(dir, 'report', 'report.html'), 'utf8');
      assert.match(html, /<h2>Screenshots<\/h2>/);
      assert.equal(html.match(/src="data:image\/png;base64,/g)?.length, 2);
      assert.ok(html.indexOf('first.png') < html.indexOf('web/login.png'), 'oldest first');
      assert.doesNotMatch(html, /notes\.txt/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

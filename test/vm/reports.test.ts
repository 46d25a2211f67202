// What a run leaves behind: the events ledger, JUnit XML, the HTML report, diagnostics bundles.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { cli, root, runCli } from '../helpers.js';

const scratch = mkdtempSync(join(tmpdir(), 'vmkit-reports-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const events = (dir: string) =>
  readFileSync(join(dir, 'events.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);

describe('reports of a run', () => {
  it('a failing two-machine test leaves JUnit XML, an HTML report, the ledger and diagnostics in one folder', async () => {
    const dir = join(scratch, 'failed');
    const { code, stderr } = await runCli([
      'run',
      '--report',
      dir,
      '--junit',
      join(dir, 'junit.xml'),
      'test/fixtures/fail-two.ts',
    ]).catch(async (error) => {
      throw error;
    });
    assert.equal(code, 1, stderr);

    // JUnit: one testcase per subtest, the failure with its message and the console tail
    const xml = readFileSync(join(dir, 'junit.xml'), 'utf8');
    assert.equal(XMLValidator.validate(xml), true);
    const parsed = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '' }).parse(xml);
    const suite = parsed.testsuites.testsuite;
    assert.equal(suite.tests, '2');
    assert.equal(suite.failures, '1');
    const [passed, failed] = suite.testcase;
    assert.equal(passed.name, 'server says hello');
    assert.equal(passed.failure, undefined);
    assert.equal(failed.name, 'client finds a missing file');
    assert.match(failed.failure.message, /cat \/etc\/does-not-exist" exited with status 1/);
    assert.match(failed.failure['#text'], /--- console of client ---/);

    // the ledger: every step with time, machine, kind, duration and outcome
    const ledger = events(dir);
    const command = ledger.find((event) => event.kind === 'command' && event.machine === 'client');
    assert.ok(command, 'a command of the client is recorded');
    for (const field of ['time', 'at', 'durationMs', 'outcome', 'name']) assert.ok(field in command, field);
    assert.equal(command.exitCode, 1);
    assert.match(String(command.stderr), /No such file/);
    assert.ok(ledger.some((event) => event.kind === 'boot' && event.machine === 'server'));
    assert.ok(ledger.some((event) => event.kind === 'console' && event.machine === 'server'));
    assert.deepEqual(
      ledger.filter((event) => event.kind === 'run').map((event) => event.outcome),
      ['failed'],
    );

    // the HTML report: self-contained, failure highlighted, outputs and consoles in it
    const html = readFileSync(join(dir, 'report.html'), 'utf8');
    assert.match(html, /two machines, one failure: FAILED/);
    assert.match(html, /class="failure"/);
    assert.match(html, /hello from the server/);
    assert.match(html, /on the console/);
    assert.doesNotMatch(html, /<script|<link|src="http/);

    // a diagnostics bundle per machine
    for (const machine of ['server', 'client']) {
      const bundle = join(dir, 'diagnostics', machine);
      for (const file of ['console.txt', 'console.raw.log', 'qemu.log', 'config.json', 'dmesg.txt', 'ps.txt'])
        assert.ok(existsSync(join(bundle, file)), `${machine}/${file}`);
      assert.match(readFileSync(join(bundle, 'ps.txt'), 'utf8'), /vmkit-agent/);
      assert.match(readFileSync(join(bundle, 'dmesg.txt'), 'utf8'), /Linux version/);
    }
  });

  for (const [args, fragment] of [
    [
      ['--report', '/proc/vmkit-no-such-folder'],
      /--report \/proc\/vmkit-no-such-folder: cannot create the folder/,
    ],
    [
      ['--junit', join('/nonexistent-vmkit', 'junit.xml')],
      /--junit .*: the folder \/nonexistent-vmkit does not exist/,
    ],
    [['--frobnicate'], /unknown option '--frobnicate'/],
  ] as const) {
    it(`refuses ${args.join(' ')}: one line, exit 2, before any machine starts`, async () => {
      const { code, stderr } = await runCli(['run', ...args, 'test/fixtures/pass.ts'], {}, 60_000);
      assert.equal(code, 2, stderr);
      assert.match(stderr, fragment);
      assert.ok(stderr.trim().split('\n').length <= 2, stderr);
      assert.doesNotMatch(stderr, /starting|booted/);
    });
  }

  it('an interrupted run still writes its report and ledger, saying it was interrupted', async () => {
    const dir = join(scratch, 'interrupted');
    const child = spawn(process.execPath, [cli, 'run', '--report', dir, 'test/fixtures/hang.ts'], {
      cwd: root,
    });
    let log = '';
    child.stderr.on('data', (chunk) => {
      log += chunk;
    });
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`no exit after SIGINT\n${log}`));
      }, 120_000);
      const poll = setInterval(() => {
        if (/all machines up/.test(log)) {
          clearInterval(poll);
          setTimeout(() => child.kill('SIGINT'), 1000);
        }
      }, 100);
      child.on('close', (status) => {
        clearTimeout(timer);
        clearInterval(poll);
        resolve(status);
      });
    });
    assert.equal(code, 130, log);
    assert.match(readFileSync(join(dir, 'report.html'), 'utf8'), /INTERRUPTED/);
    assert.ok(events(dir).some((event) => event.kind === 'run' && event.outcome === 'interrupted'));
  });
});

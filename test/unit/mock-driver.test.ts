import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  CapabilityError,
  defineTest,
  loadMockScript,
  MockScriptError,
  mockBackend,
  runTest,
} from '../../src/index.js';
import webTest from '../fixtures/mock-web.js';
import { runProgram } from '../helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'vmkit-mock-driver-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const fixture = (name: string) => join(import.meta.dirname, '..', 'fixtures', name);

/** The ledger's events of one kind. */
function events(outputDir: string, kind: string): Array<Record<string, unknown>> {
  return readFileSync(join(outputDir, 'events.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((event) => event.kind === kind);
}

describe('the driver on the mock backend', () => {
  test('a two-machine test passes from a YAML script; ledger, JUnit and HTML report record it', async () => {
    const backend = mockBackend(await loadMockScript(fixture('mock-web.yaml')));
    const outputDir = join(dir, 'pass');
    const junit = join(dir, 'pass.xml');
    const started = performance.now();
    const report = await runTest(webTest, { backend, outputDir, junit, reportDir: outputDir });
    assert.equal(report.passed, true, report.error?.stack);
    assert.ok(performance.now() - started < 10_000, 'a mock run takes seconds at most');
    backend.verify();
    const commands = events(outputDir, 'command').map((event) => `${event.machine}: ${event.name}`);
    assert.ok(commands.includes('client: curl -s http://server/'), commands.join('\n'));
    assert.deepEqual(
      events(outputDir, 'subtest').map((event) => [event.name, event.outcome]),
      [
        ['server up', 'ok'],
        ['client fetches the page', 'ok'],
      ],
    );
    const xml = readFileSync(junit, 'utf8');
    assert.match(xml, /<testsuite [^>]*failures="0"/);
    assert.match(readFileSync(join(outputDir, 'report.html'), 'utf8'), /client fetches the page/);
  });

  test('an unexpected command fails the run with MockScriptError, in the report too', async () => {
    const backend = mockBackend({ script: [{ unit: 'nginx.service', machine: 'server' }] });
    const outputDir = join(dir, 'fail');
    const junit = join(dir, 'fail.xml');
    const report = await runTest(webTest, { backend, outputDir, junit });
    assert.equal(report.passed, false);
    assert.ok(report.error instanceof MockScriptError, String(report.error));
    assert.equal(report.failedStep, 'subtest "server up"');
    assert.match(
      report.error.message,
      /machine server \(mock backend\): unexpected command \(vmkit's probe: is TCP port 80 listening\? a step \{ port: 80 \} answers it\)/,
    );
    const xml = readFileSync(junit, 'utf8');
    assert.match(xml, /MockScriptError/);
    assert.match(xml, /unexpected command/);
    // The diagnostics bundle is written; the mock says what it cannot give.
    assert.ok(existsSync(join(outputDir, 'diagnostics')) || existsSync(join(outputDir, 'server')));
  });

  test('a failing assertion in the test is reported as such, the machines answering on', async () => {
    const backend = mockBackend({
      script: [{ unit: 'nginx.service' }, { port: 80 }, { command: /^curl/, stdout: 'gone\n' }],
    });
    const report = await runTest(webTest, { backend, outputDir: join(dir, 'assert') });
    assert.equal(report.passed, false);
    assert.match(String(report.error), /unexpected page: gone/);
  });

  test('a machine can declare its own mock backend (no run option)', async () => {
    const own = mockBackend({ script: [{ command: 'hostname', stdout: 'box\n' }] });
    const definition = defineTest({
      machines: { box: { backend: own } },
      async test({ box }) {
        if ((await box.succeed('hostname')) !== 'box\n') throw new Error('wrong answer');
      },
    });
    const report = await runTest(definition, { outputDir: join(dir, 'declared') });
    assert.equal(report.passed, true, report.error?.stack);
    own.verify();
  });

  test('suites need setup snapshots: the mock refuses them before any machine boots', async () => {
    const suite = defineTest({
      machines: { box: {} },
      tests: { one: async () => {} },
    });
    const backend = mockBackend();
    const report = await runTest(suite, { backend, outputDir: join(dir, 'suite') });
    assert.equal(report.passed, false);
    assert.ok(report.error instanceof CapabilityError, String(report.error));
    assert.match(report.error.message, /mock backend does not support snapshot \(tests: start each test/);
    assert.deepEqual(backend.commands, []);
  });
});

describe('vmkit run --backend mock', () => {
  const run = (args: string[]) =>
    runProgram(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'run', ...args], {
      timeoutMs: 60_000,
    });

  test('runs a test script against a mock script file, without QEMU', async () => {
    const junit = join(dir, 'cli.xml');
    const result = await run([
      'test/fixtures/mock-web.ts',
      '--backend',
      'mock',
      '--mock-script',
      'test/fixtures/mock-web.yaml',
      '--junit',
      junit,
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr + result.stdout, /passed in/);
    assert.match(readFileSync(junit, 'utf8'), /failures="0"/);
  });

  test('a step the test never used fails the run, naming it', async () => {
    const script = join(dir, 'extra.json');
    const steps = [
      { unit: 'nginx.service', machine: 'server' },
      { port: 80, machine: 'server' },
      { command: 'curl -s http://server/', stdout: 'welcome\n' },
      { command: 'systemctl stop nginx' },
    ];
    const { writeFileSync } = await import('node:fs');
    writeFileSync(script, JSON.stringify(steps));
    const result = await run(['test/fixtures/mock-web.ts', '--backend', 'mock', '--mock-script', script]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr + result.stdout,
      /expected commands that never came:[\s\S]*"systemctl stop nginx"/,
    );
  });

  test('bad input is exit 2: an unknown backend, a broken script file, --mock-script with qemu', async () => {
    const unknown = await run(['test/fixtures/mock-web.ts', '--backend', 'nope']);
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.match(unknown.stderr, /unknown backend "nope" \(known: qemu, mock\)/);
    const script = join(dir, 'broken.yaml');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(script, '- stdout: "no command"\n');
    const broken = await run(['test/fixtures/mock-web.ts', '--backend', 'mock', '--mock-script', script]);
    assert.equal(broken.code, 2, broken.stderr);
    assert.match(broken.stderr, /exactly one of command, unit or port/);
    const qemu = await run(['test/fixtures/mock-web.ts', '--backend', 'qemu', '--mock-script', script]);
    assert.equal(qemu.code, 2, qemu.stderr);
    assert.match(qemu.stderr, /--mock-script is for --backend mock/);
  });
});

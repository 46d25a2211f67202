// The vmkit command line: exit codes and messages for good and bad input.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from '../helpers.js';

describe('vmkit CLI', () => {
  it('prints help', async () => {
    const { code, stdout } = await runCli(['--help']);
    assert.equal(code, 0);
    assert.match(stdout, /run \[options\] <script>/);
    assert.match(stdout, /doctor/);
  });

  it('rejects an unknown option with exit 2', async () => {
    const { code, stderr } = await runCli(['run', '--bogus', 'x.ts']);
    assert.equal(code, 2);
    assert.match(stderr, /unknown option '--bogus'/);
  });

  it('rejects a missing script with one clear line and exit 2', async () => {
    const { code, stderr } = await runCli(['run', 'no/such/script.ts']);
    assert.equal(code, 2);
    assert.equal(stderr.trim(), 'vmkit: cannot read test script no/such/script.ts: ENOENT');
  });

  it('rejects a script without a test definition', async () => {
    const { code, stderr } = await runCli(['run', 'test/fixtures/no-default.ts']);
    assert.equal(code, 2);
    assert.match(stderr, /must export default defineTest/);
  });

  it('rejects an unknown image and an unknown accelerator', async () => {
    const image = await runCli(['image', 'build', 'nope']);
    assert.equal(image.code, 2);
    assert.match(image.stderr, /unknown image "nope"/);
    const accel = await runCli(['run', '--accel', 'warp', 'test/fixtures/pass.ts']);
    assert.equal(accel.code, 2);
    assert.match(accel.stderr, /unknown accel "warp"/);
  });

  it('rejects a script asking for an unknown image before booting anything', async () => {
    const { code, stderr } = await runCli(['run', 'test/fixtures/bad-image.ts']);
    assert.equal(code, 2);
    assert.equal(
      stderr.trim(),
      'vmkit: test/fixtures/bad-image.ts: machine box asks for unknown image "windows-95" (known images: tiny, debian)',
    );
  });

  it('says so when QEMU is not installed', async () => {
    const { code, stderr } = await runCli(['run', 'test/fixtures/pass.ts'], {
      VMKIT_QEMU: '/nonexistent/qemu',
    });
    assert.equal(code, 1); // a failure, not bad input
    assert.match(stderr, /QEMU is not installed/);
    assert.equal(stderr.trim().split('\n').length, 1);
  });

  it('doctor reports QEMU, the accelerator and the images', async () => {
    const { code, stdout } = await runCli(['doctor']);
    assert.equal(code, 0, stdout);
    assert.match(stdout, /ok\s+qemu/);
    assert.match(stdout, /accelerator\s+(kvm|tcg): \S/);
    assert.match(stdout, /ok\s+images\s+.*\btiny \(/);
  });

  it('image list shows the cached tiny image with its key and kernel', async () => {
    const { code, stdout, stderr } = await runCli(['image', 'list']);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^tiny\t[0-9a-f]+\tkernel \S+-cloud-amd64\t\//m);
  });

  it('runs a passing script: exit 0, a log with machine prefixes and timings', async () => {
    const { code, stderr } = await runCli(['run', 'test/fixtures/pass.ts']);
    assert.equal(code, 0, stderr);
    assert.match(
      stderr,
      /\[solo\] +(booted|started from the boot cache \(boot\.tiny-[0-9a-f]+\)): backdoor up after \d+ ms/,
    );
    assert.match(stderr, /subtest says hello: ok \(\d+ ms\)/);
    assert.match(stderr, /passed in \d+\.\d s/);
  });

  it('runs a failing script: exit 1 naming the step, the command and its output', async () => {
    const { code, stderr } = await runCli(['run', 'test/fixtures/fail.ts']);
    assert.equal(code, 1, stderr);
    assert.match(stderr, /FAILED during subtest "expects a missing file"/);
    assert.match(stderr, /CommandFailedError: command "cat \/etc\/does-not-exist" exited with status 1/);
    assert.match(stderr, /No such file or directory/);
  });

  it('--keep keeps the console and QEMU logs and says where', async () => {
    const { code, stderr } = await runCli(['run', '--keep', 'test/fixtures/pass.ts']);
    assert.equal(code, 0, stderr);
    const kept = stderr.match(/state kept in (\S+)/)?.[1];
    assert.ok(kept, `the log names the kept folder:\n${stderr}`);
    try {
      assert.match(readFileSync(join(kept, 'solo', 'console.log'), 'utf8'), /tiny image up/);
      assert.ok(existsSync(join(kept, 'solo', 'qemu.log')), 'qemu.log is kept');
    } finally {
      rmSync(kept, { recursive: true, force: true });
    }
  });

  for (const [args, fragment] of [
    [
      ['run', '--timeout', '0', 'test/fixtures/pass.ts'],
      /'--timeout <ms>' argument '0' is invalid. must be a whole number from 1/,
    ],
    [['run', '--timeout', 'soon', 'test/fixtures/pass.ts'], /argument 'soon' is invalid/],
    [['run', '--timeout', '99999999999', 'test/fixtures/pass.ts'], /from 1 to 2147483647/],
    [['snapshot', 'rm', 'no-such-snapshot'], /no snapshot "no-such-snapshot"/],
    [['frobnicate'], /unknown command 'frobnicate'/],
  ] as const) {
    it(`refuses vmkit ${args.join(' ')} as bad input: exit 2, one line naming the problem`, async () => {
      const { code, stderr } = await runCli([...args]);
      assert.equal(code, 2, stderr);
      assert.match(stderr, fragment);
      assert.ok(stderr.trim().split('\n').length <= 3, `short: ${stderr}`);
    });
  }

  it('shows where a script has a syntax error: file, line, column and message', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-syntax-'));
    try {
      const script = join(dir, 'broken.ts');
      writeFileSync(
        script,
        "import { defineTest } from 'vmkit';\nexport default defineTest({ machines: { a: {} }, async test({ a }) { await a.succeed('true')) } });\n",
      );
      const { code, stderr } = await runCli(['run', script]);
      assert.equal(code, 2, stderr);
      assert.match(stderr, /broken\.ts:2:\d+: ERROR: Expected ";" but found "\)"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exits with the failure when the timeout fires while machines are still starting', async () => {
    for (const timeout of ['1', '1500']) {
      const started = Date.now();
      const { code, stderr } = await runCli(
        // --fresh: a boot, which outlasts the timeout (a start from the boot cache may not).
        ['run', '--fresh', '--timeout', timeout, 'test/fixtures/pass.ts'],
        {},
        60_000,
      );
      assert.equal(code, 1, stderr);
      assert.match(stderr, new RegExp(`exceeded its global timeout of ${timeout} ms`));
      assert.ok(Date.now() - started < 30_000, `exited promptly (${Date.now() - started} ms)`);
    }
  });

  it('enforces the global timeout', async () => {
    const { code, stderr } = await runCli(['run', '--timeout', '20000', 'test/fixtures/hang.ts']);
    assert.equal(code, 1, stderr);
    assert.match(stderr, /exceeded its global timeout of 20000 ms/);
  });

  it('a run or cache folder that cannot be made (under /proc) fails at once with its path', async () => {
    const run = await runCli(['run', 'test/fixtures/pass.ts'], { VMKIT_RUN_DIR: '/proc/nope/run' }, 30_000);
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /vmkit: cannot make the run folder \/proc\/nope\/run\/r \(VMKIT_RUN_DIR\): ENOENT/,
    );
    const image = await runCli(['image', 'build'], { VMKIT_CACHE_DIR: '/proc/nope/cache' }, 30_000);
    assert.equal(image.code, 1, image.stderr);
    assert.match(image.stderr, /ENOENT: no such file or directory, mkdir '\/proc\/nope'/);
  });
});

// The NixOS driver's test-script calls, on two real guests in one run (one started late).
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CommandFailedError,
  ConfigError,
  defineTest,
  RunLog,
  runTest,
  TestRunError,
} from '../../src/index.js';

describe('NixOS driver parity in a test script', () => {
  let scratch: string;
  const lines: string[] = [];

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vmkit-parity-'));
  });
  after(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('runs every parity call against real machines', async () => {
    const outputDir = join(scratch, 'out');
    const folder = join(scratch, 'tree');
    await mkdir(join(folder, 'sub'), { recursive: true });
    await writeFile(join(folder, 'run.sh'), '#!/bin/sh\necho ran\n');
    await chmod(join(folder, 'run.sh'), 0o750);
    await writeFile(join(folder, 'sub', 'secret'), 'key');
    await chmod(join(folder, 'sub', 'secret'), 0o600);

    const definition = defineTest({
      machines: {
        alpha: {},
        late: { start: false, setup: (late) => late.succeed('touch /root/set-up').then(() => {}) },
      },
      async test(ctx) {
        const { alpha, late } = ctx;
        assert.equal(ctx.outputDir, outputDir);
        assert.equal(ctx.machine, undefined, 'no alias with two machines');

        // succeed / fail with several commands
        assert.equal(await alpha.succeed('echo one', 'echo two', { timeoutMs: 10_000 }), 'one\ntwo\n');
        assert.equal(await alpha.fail('echo a; false', 'exit 3'), 'a\n');
        const failed = await alpha.succeed('true', 'echo bad; exit 4', 'touch /tmp/never').catch((e) => e);
        assert.ok(
          failed instanceof CommandFailedError && failed.command === 'echo bad; exit 4',
          String(failed),
        );
        await alpha.fail('test -e /tmp/never');

        // execute without waiting for the status, and fire-and-forget
        let started = performance.now();
        assert.deepEqual(await alpha.execute('sleep 3; touch /tmp/late-file', { check: false }), {
          exitCode: -1,
          stdout: '',
          stderr: '',
        });
        assert.ok(performance.now() - started < 2500, 'check: false does not wait for the command');
        await alpha.waitForFile('/tmp/late-file', { timeoutMs: 20_000 });
        alpha.sendCommand('touch /tmp/sent');
        await alpha.waitForFile('/tmp/sent', { timeoutMs: 20_000 });

        // a blocking attempt is killed after attemptTimeoutMs and the next one succeeds
        started = performance.now();
        await alpha.waitUntilSucceeds('[ -e /tmp/second ] || { touch /tmp/second; sleep 300; }', {
          timeoutMs: 60_000,
          attemptTimeoutMs: 2000,
        });
        assert.ok(performance.now() - started < 20_000, `took ${performance.now() - started} ms`);
        await assert.rejects(
          alpha.waitForFile('/x', { timeoutMs: 1000, attemptTimeoutMs: 2000 }),
          /attemptTimeoutMs must not be larger than timeoutMs/,
        );

        // retry: an attempt that never settles does not eat the budget
        started = performance.now();
        const value = await ctx.retry(
          ({ number }) => (number === 1 ? new Promise<string>(() => {}) : alpha.succeed('echo retried')),
          { timeoutMs: 30_000, attemptTimeoutMs: 1000, intervalMs: 100 },
        );
        assert.equal(value, 'retried\n');
        assert.ok(performance.now() - started < 10_000);
        await assert.rejects(
          ctx.retry(() => true, { timeoutMs: 100, attemptTimeoutMs: 200 }),
          ConfigError,
        );

        // polling conditions: checked before commands, at most once per interval
        const condition = ctx.pollingCondition(() => alpha.succeed('true'), {
          intervalMs: 1000,
          description: 'alpha answers',
        });
        started = performance.now();
        while (performance.now() - started < 3000) await alpha.succeed('true');
        condition.stop();
        assert.ok(condition.checks >= 2 && condition.checks <= 4, `${condition.checks} checks in 3 s`);
        const broken = ctx.pollingCondition(
          async () => {
            await alpha.succeed('test -e /tmp/healthy');
          },
          { intervalMs: 0, description: 'healthy file present' },
        );
        const gated = await alpha.succeed('echo hi').catch((e) => e);
        assert.ok(gated instanceof TestRunError && /healthy file present/.test(gated.message), String(gated));
        broken.stop();

        // sleep, the monitor, QMP events, log and nested steps
        await ctx.sleep(0.1);
        started = performance.now();
        await alpha.sleep(0.3);
        assert.ok(performance.now() - started >= 295, 'sleep waits on the host');
        assert.match(await alpha.sendMonitorCommand('info status'), /running/);
        const stopped = alpha.waitForQmpEvent('STOP', { timeoutMs: 20_000 });
        await alpha.sendMonitorCommand('stop');
        assert.equal((await stopped).event, 'STOP');
        const resumed = alpha.waitForQmpEvent({ event: 'RESUME' }, { timeoutMs: 20_000 });
        await alpha.sendMonitorCommand('cont');
        await resumed;
        alpha.log('a note from the test');
        assert.equal(await alpha.nested('a nested step', () => alpha.succeed('echo inside')), 'inside\n');
        await assert.rejects(
          alpha.nested('a failing step', () => alpha.succeed('exit 5')),
          CommandFailedError,
        );

        // folder copies keep modes
        await alpha.copyToVm(folder, '/srv/tree');
        assert.equal(await alpha.succeed('stat -c %a /srv/tree/run.sh /srv/tree/sub/secret'), '750\n600\n');
        assert.equal(await alpha.succeed('/srv/tree/run.sh'), 'ran\n');
        await alpha.copyFromVm('/srv/tree', join(ctx.outputDir, 'back'));
        assert.equal((await stat(join(outputDir, 'back', 'run.sh'))).mode & 0o777, 0o750);
        assert.equal((await stat(join(outputDir, 'back', 'sub', 'secret'))).mode & 0o777, 0o600);

        // a machine started late joins the test's VLAN
        assert.throws(() => late.succeed('true'), /start: false.*late.start\(\)/);
        await late.start();
        assert.equal(await late.succeed('hostname'), 'late\n');
        await late.succeed('test -e /root/set-up'); // its setup ran once it came up
        await late.succeed('ping -c 1 -W 10 alpha');

        // joinAll waits for every machine to shut down
        await Promise.all([alpha.shutdown(), late.shutdown()]);
        await ctx.joinAll({ timeoutMs: 60_000 });
      },
    });
    const captureDir = join(scratch, 'pcap');
    const report = await runTest(definition, {
      outputDir,
      captureDir,
      log: new RunLog((line) => lines.push(line)),
    });
    assert.ok(report.passed, `${report.failedStep}: ${report.error?.stack}\n${lines.join('\n')}`);
    const log = lines.join('\n');
    assert.match(log, /\[alpha\] +a note from the test/);
    assert.match(log, /\[alpha\] +a nested step\.\.\./);
    assert.match(log, /\[alpha\] +a nested step: ok \(\d+ ms\)/);
    assert.match(log, /\[alpha\] +a failing step: FAILED after \d+ ms \(.*status 5/);
    assert.match(log, /starting late \(declared with start: false\)/);
    // captureDir: one pcap per VLAN, holding the frames of the ping from late to alpha.
    const pcap = await stat(join(captureDir, 'vlan1.pcap'));
    assert.ok(pcap.size > 24 + 16 + 98, `vlan1.pcap holds frames (${pcap.size} bytes)`);
  });
});

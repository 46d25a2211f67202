// One real guest under QEMU, exercised through the Machine API.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CommandFailedError,
  CommandTimeoutError,
  ConfigError,
  type Machine,
  startMachine,
  TimeoutError,
} from '../../src/index.js';
import { lacks } from '../helpers.js';

describe('Machine on the tiny image', () => {
  let machine: Machine;
  let scratch: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vmkit-test-'));
    machine = await startMachine({ name: 'subject' });
  });

  after(async () => {
    await machine?.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('returns stdout, stderr and exit status separately', async () => {
    const result = await machine.execute('echo out; echo err >&2; exit 7');
    assert.deepEqual(result, { exitCode: 7, stdout: 'out\n', stderr: 'err\n' });
  });

  it('runs commands as root with the machine name as hostname', async () => {
    assert.equal(await machine.succeed('id -u'), '0\n');
    assert.equal(await machine.succeed('hostname'), 'subject\n');
  });

  it('succeed throws CommandFailedError with the evidence; fail inverts', async () => {
    const error = await machine.succeed('echo partial; echo broken >&2; exit 3').catch((e: unknown) => e);
    assert.ok(error instanceof CommandFailedError, String(error));
    assert.equal(error.exitCode, 3);
    assert.equal(error.stdout, 'partial\n');
    assert.equal(error.stderr, 'broken\n');
    assert.match(error.message, /status 3/);
    assert.equal(await machine.fail('echo no; false'), 'no\n');
    await assert.rejects(machine.fail('true'), CommandFailedError);
  });

  it('passes shell syntax and odd bytes in commands through untouched', async () => {
    const text = `quotes ' " \` $HOME \\ ; | & newline\nsecond line ✓`;
    const out = await machine.succeed(`cat <<'EOF'\n${text}\nEOF`);
    assert.equal(out, `${text}\n`);
  });

  it('returns binary output byte for byte', async () => {
    const raw = await machine.executeRaw(
      "printf '\\000\\001\\377\\n\\r\\033'; head -c 4096 /dev/urandom > /tmp/r; cat /tmp/r; md5sum /tmp/r >&2",
    );
    assert.deepEqual([...raw.stdout.subarray(0, 6)], [0, 1, 255, 10, 13, 27]);
    const digest = createHash('md5').update(raw.stdout.subarray(6)).digest('hex');
    assert.equal(raw.stderr.toString().split(' ')[0], digest);
  });

  it('returns large output whole', async () => {
    const out = await machine.succeed('seq 1 200000');
    const lines = out.trimEnd().split('\n');
    assert.equal(lines.length, 200000);
    assert.equal(lines.at(-1), '200000');
  });

  it('does not hang when a command leaves a background process holding stdout', async () => {
    const out = await machine.succeed('sleep 1000 & echo started', { timeoutMs: 20_000 });
    assert.equal(out, 'started\n');
    assert.equal(await machine.succeed('echo next'), 'next\n');
  });

  it('times out a command, returns the partial output, and stays usable', async () => {
    const started = performance.now();
    const error = await machine
      .execute('echo before; sleep 30; echo after', { timeoutMs: 1500 })
      .catch((e: unknown) => e);
    assert.ok(error instanceof CommandTimeoutError, String(error));
    assert.equal(error.stdout, 'before\n');
    assert.ok(performance.now() - started < 15_000, 'the timeout ended the call promptly');
    assert.equal(await machine.succeed('echo alive'), 'alive\n');
    const left = await machine.succeed('ps -o args | grep "^sleep 30" || echo none');
    assert.equal(left, 'none\n', 'the timed-out command was killed');
  });

  it('serializes concurrent calls on one machine', async () => {
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => machine.succeed(`echo ${i} >> /tmp/order; sleep 0.0$i; echo ${i}`)),
    );
    assert.deepEqual(
      results,
      Array.from({ length: 8 }, (_, i) => `${i}\n`),
    );
    assert.equal(
      await machine.succeed('cat /tmp/order'),
      Array.from({ length: 8 }, (_, i) => `${i}\n`).join(''),
    );
  });

  it('copies files both ways, binary-safe, 50 MB included', async () => {
    const small = Buffer.from([0, 10, 13, 255, 0x1b, 0x04, 0x03]);
    await writeFile(join(scratch, 'small'), small);
    await machine.copyToVm(join(scratch, 'small'), '/root/deep/dir/small');
    assert.equal(await machine.succeed('od -An -tx1 /root/deep/dir/small | tr -d " \\n"'), '000a0dff1b0403');

    const big = randomBytes(50 * 1024 * 1024);
    await writeFile(join(scratch, 'big'), big);
    await machine.copyToVm(join(scratch, 'big'), '/tmp/big', { timeoutMs: 300_000 });
    const guestSum = (await machine.succeed('md5sum /tmp/big', { timeoutMs: 120_000 })).split(' ')[0];
    assert.equal(guestSum, createHash('md5').update(big).digest('hex'));
    await machine.copyFromVm('/tmp/big', join(scratch, 'back/big'), { timeoutMs: 300_000 });
    assert.ok((await readFile(join(scratch, 'back/big'))).equals(big), 'the 50 MB file came back intact');
    await machine.succeed('rm /tmp/big');

    await machine.copyFromVm('/root/deep/dir/small', join(scratch, 'small-back'));
    assert.ok((await readFile(join(scratch, 'small-back'))).equals(small), 'the small file came back intact');
  });

  it('reports a missing guest file clearly and stays usable', async () => {
    await assert.rejects(machine.copyFromVm('/no/such/file', join(scratch, 'x')), /\/no\/such\/file/);
    await assert.rejects(machine.copyToVm(join(scratch, 'does-not-exist'), '/tmp/x'), /does-not-exist/);
    assert.equal(await machine.succeed('echo ok'), 'ok\n');
  });

  it('waits for files, ports and commands, with errors naming what was awaited', async () => {
    await machine.succeed('(sleep 1; touch /tmp/flag) >/dev/null 2>&1 &');
    await machine.waitForFile('/tmp/flag', { timeoutMs: 20_000 });
    await machine.succeed('(sleep 1; nc -l -p 4444 >/dev/null 2>&1) >/dev/null 2>&1 &');
    await machine.waitForOpenPort(4444, { timeoutMs: 20_000 });
    await machine.succeed('killall nc');
    await machine.waitForClosedPort(4444, { timeoutMs: 20_000 });
    await machine.waitUntilFails('test -e /tmp/flag && rm /tmp/flag; test -e /tmp/flag', {
      timeoutMs: 20_000,
    });
    const error = await machine
      .waitUntilSucceeds('echo nope; exit 4', { timeoutMs: 2000 })
      .catch((e: unknown) => e);
    assert.ok(error instanceof TimeoutError, String(error));
    assert.match(error.message, /"echo nope; exit 4" to succeed/);
    assert.match(error.message, /status 4/);
  });

  it('drives the serial console: send keys, wait for text, read the log', {
    skip: lacks('consoleInput'),
  }, async () => {
    machine.sendConsole('echo console-$((6*7))\n');
    const match = await machine.waitForConsoleText(/console-(\d+)\n/, { timeoutMs: 20_000 });
    assert.equal(match[1], '42');
    assert.match(machine.getConsoleLog(), /console-42/);
    await assert.rejects(machine.waitForConsoleText(/never-printed/, { timeoutMs: 500 }), TimeoutError);
    // A match is consumed: the same wait does not find the old line again.
    await assert.rejects(machine.waitForConsoleText(/console-42\n/, { timeoutMs: 1000 }), TimeoutError);
    // A string matches literally, regular-expression characters included.
    machine.sendConsole("echo '(x+y)'\n");
    assert.equal((await machine.waitForConsoleText('(x+y)', { timeoutMs: 20_000 }))[0], '(x+y)');
  });

  it('rejects bad options before starting anything', async () => {
    await assert.rejects(startMachine({ name: 'Bad Name!' }), ConfigError);
    await assert.rejects(
      startMachine({ name: 'x', image: 'no-such-image' }),
      /unknown image "no-such-image"/,
    );
    await assert.rejects(startMachine({ name: 'x', memoryMiB: -5 }), /memoryMiB/);
  });
});

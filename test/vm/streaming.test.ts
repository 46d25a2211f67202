// Live output and started processes on one real guest: execute with listeners, spawn.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { PassThrough, Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { CommandTimeoutError, ConfigError, type Machine, startMachine } from '../../src/index.js';

const md5 = (bytes: Buffer) => createHash('md5').update(bytes).digest('hex');

describe('streaming output and started processes', () => {
  let machine: Machine;

  before(async () => {
    machine = await startMachine({ name: 'streamer' });
  });

  after(async () => {
    await machine?.close();
  });

  it('execute delivers output while the command runs and still returns all of it', async () => {
    const arrivals: Array<{ at: number; text: string }> = [];
    const started = performance.now();
    const result = await machine.execute(
      'for i in 1 2 3 4; do echo "line $i"; echo "warn $i" >&2; sleep 1; done; exit 5',
      { onStdout: (chunk) => arrivals.push({ at: performance.now() - started, text: chunk.toString() }) },
    );
    const total = performance.now() - started;
    assert.equal(result.exitCode, 5);
    assert.equal(result.stdout, 'line 1\nline 2\nline 3\nline 4\n');
    assert.equal(result.stderr, 'warn 1\nwarn 2\nwarn 3\nwarn 4\n');
    assert.equal(arrivals.map((a) => a.text).join(''), result.stdout);
    const first = arrivals[0];
    assert.ok(first, 'no output arrived');
    assert.ok(first.text.startsWith('line 1'), JSON.stringify(arrivals));
    // The first line left the guest while three seconds of the command were still to run.
    assert.ok(total - first.at > 2000, `first output at ${first.at} ms, end at ${total} ms`);
  });

  it('streamed output is binary-safe and complete, stdout and stderr apart', async () => {
    const chunks: Buffer[] = [];
    const raw = await machine.executeRaw(
      'head -c 300000 /dev/urandom > /tmp/r; md5sum < /tmp/r >&2; cat /tmp/r',
      { onStdout: (chunk) => chunks.push(chunk) },
    );
    assert.equal(raw.stdout.length, 300_000);
    assert.equal(raw.stderr.toString().split(' ')[0], md5(raw.stdout));
    assert.equal(md5(Buffer.concat(chunks)), md5(raw.stdout));
  });

  it('a streamed command that times out is killed with its session; the partial output is kept', async () => {
    const error = await machine
      .execute('echo before; (sleep 300; echo child) & sleep 300', { timeoutMs: 1000, onStdout: () => {} })
      .catch((e: unknown) => e);
    assert.ok(error instanceof CommandTimeoutError, String(error));
    assert.equal(error.stdout, 'before\n');
    assert.equal(await machine.execute('pgrep -f "sleep 300" || true').then((r) => r.stdout), '');
  });

  it('a background process holding stdout does not hold up a streamed command', async () => {
    const started = performance.now();
    const result = await machine.execute('(sleep 20; echo late) & echo now', { onStdout: () => {} });
    assert.equal(result.stdout, 'now\n');
    assert.ok(performance.now() - started < 10_000);
  });

  it('spawn: stdin in, stdout and stderr out as streams, wait() for the exit status', async () => {
    const child = await machine.spawn('cat; echo "eof seen" >&2; exit 3');
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    const echoed = new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.stdin.write('first\n');
    await echoed; // cat answered while its stdin was still open
    child.stdin.end(Buffer.from([0, 255, 10]));
    assert.deepEqual(await child.wait(30_000), { exitCode: 3, timedOut: false });
    assert.deepEqual(Buffer.concat(out), Buffer.concat([Buffer.from('first\n'), Buffer.from([0, 255, 10])]));
    assert.equal(Buffer.concat(err).toString(), 'eof seen\n');
  });

  it('spawn: a long-running server keeps running while other commands come and go; kill ends its session', async () => {
    const server = await machine.spawn(
      'mkdir -p /www && echo hello > /www/index.html; while true; do echo tick; sleep 1; done & httpd -f -p 7070 -h /www',
    );
    await machine.waitForOpenPort(7070, { timeoutMs: 30_000 });
    for (let i = 0; i < 3; i++) assert.equal(await machine.succeed(`echo ${i}`), `${i}\n`);
    assert.equal(await machine.succeed('wget -q -O - http://127.0.0.1:7070/'), 'hello\n');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.match(server.stdoutBytes.toString(), /tick\ntick\n/);
    assert.equal(server.exit, undefined);
    await server.kill('TERM');
    const exit = await server.wait(30_000);
    assert.equal(exit.exitCode, 143);
    await machine.waitForClosedPort(7070, { timeoutMs: 30_000 });
    assert.equal(await machine.execute('pgrep -f "sleep 1" || true').then((r) => r.stdout), '');
  });

  it('observers see every command with its output and its end', async () => {
    const seen: string[] = [];
    const stop = machine.observeCommands((command, method) => ({
      output: (stream, chunk) => seen.push(`${stream}:${chunk}`),
      ended: (outcome) => seen.push(`${method} ${command} -> ${outcome.exitCode}`),
    }));
    await machine.succeed('echo watched');
    stop();
    await machine.succeed('echo unwatched');
    assert.deepEqual(seen, ['stdout:watched\n', 'succeed echo watched -> 0']);
  });

  it('shellInteract and consoleInteract join given streams to a root shell and to the console', async () => {
    const collect = () => {
      let text = '';
      const output = new Writable({
        write(chunk, _encoding, done) {
          text += chunk;
          done();
        },
      });
      return { output, text: () => text };
    };
    const shellOut = collect();
    const shellIn = new PassThrough();
    shellIn.end('hostname\nid -u\n');
    await machine.shellInteract({ input: shellIn, output: shellOut.output });
    assert.equal(shellOut.text(), 'streamer\n0\n');

    const consoleOut = collect();
    const consoleIn = new PassThrough();
    const session = machine.consoleInteract({ input: consoleIn, output: consoleOut.output });
    consoleIn.write('echo typed"-on-"console\n');
    const deadline = Date.now() + 30_000;
    while (!consoleOut.text().includes('typed-on-console') && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 100));
    consoleIn.end();
    await session;
    assert.match(consoleOut.text(), /typed-on-console/);
  });

  it('refuses bad listeners and signals with a ConfigError', async () => {
    await assert.rejects(
      machine.execute('true', { onStdout: 1 as unknown as () => void }),
      (error: Error) => error instanceof ConfigError && /onStdout: must be a function/.test(error.message),
    );
    const child = await machine.spawn('sleep 30');
    await assert.rejects(child.kill('NOT A SIGNAL'), ConfigError);
    await child.kill('KILL');
    assert.equal((await child.wait(30_000)).exitCode, 137);
  });
});

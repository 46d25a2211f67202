import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { keyBytes } from '../../src/console/keys.js';
import { withoutKernelLines } from '../../src/console/matching.js';
import { ScreenModel } from '../../src/console/screen.js';
import { SerialConsole } from '../../src/console/serial.js';
import type { ConsoleStepEvent } from '../../src/console/steps.js';
import { Transcript } from '../../src/console/transcript.js';
import { ConfigError } from '../../src/errors.js';

describe('console keys, matching, screen and transcript', () => {
  test('key names map to the bytes a VT100 terminal sends', () => {
    assert.equal(keyBytes('enter'), '\r');
    assert.equal(keyBytes('Up'), '\x1b[A');
    assert.equal(keyBytes('f10'), '\x1b[21~');
    assert.equal(keyBytes('ctrl-c'), '\x03');
    assert.equal(keyBytes('Ctrl+X'), '\x18');
    assert.equal(keyBytes('control-a'), '\x01');
    assert.equal(keyBytes('ctrl-['), '\x1b');
    assert.equal(keyBytes('e'), 'e');
    assert.equal(keyBytes('E'), 'E');
    assert.throws(
      () => keyBytes('hyper-q'),
      (error: Error) => error instanceof ConfigError && /unknown key "hyper-q"/.test(error.message),
    );
    assert.throws(() => keyBytes(42 as never), /a key name is a string, not 42/);
  });

  test('kernel messages are left out of matching, wherever they land, with offsets mapped back', () => {
    const text = 'login: [   12.345678] random: crng init done\nalice\n[    3.000001] eth0: up\nPassword: ';
    const view = withoutKernelLines(text);
    assert.equal(view.text, 'login: alice\nPassword: ');
    const at = view.text.indexOf('Password');
    assert.equal(text.slice(view.original(at), view.original(at) + 8), 'Password');
    assert.equal(view.original(view.text.length), text.length);
    assert.equal(withoutKernelLines('no kernel here').text, 'no kernel here');
  });

  test('the screen model draws cursor-positioned output as a terminal would', async () => {
    const screen = new ScreenModel(40, 10);
    screen.write('\x1b[2J\x1b[3;5HInstaller\x1b[5;5H[ OK ]\x1b]0;title\x07\x1b[?2004h');
    await screen.settled();
    assert.equal(screen.text(), '\n\n    Installer\n\n    [ OK ]');
    const before = screen.generation;
    screen.write('\x1b[3;5HChanged  ');
    await screen.settled();
    assert.ok(screen.generation > before);
    assert.match(screen.text(), /^ {4}Changed$/m);
    screen.dispose();
  });

  test('the transcript keeps what was sent and received, newest last', () => {
    const transcript = new Transcript();
    transcript.sent('root\r');
    transcript.received('Password: ');
    transcript.received('');
    assert.deepEqual(
      transcript.entries.map(({ direction, text }) => [direction, text]),
      [
        ['sent', 'root\r'],
        ['received', 'Password: '],
      ],
    );
    assert.match(transcript.format(), /^\+\d+\.\d{3}s > root\\r\n\+\d+\.\d{3}s < Password: \n$/);
  });

  test('console steps are emitted for the ledger: waits, and a step around them only once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-steps-'));
    const console = new SerialConsole(join(dir, 'console.log'));
    const wire = new PassThrough();
    console.attach(wire as unknown as Socket);
    const steps: ConsoleStepEvent[] = [];
    console.on('step', (step) => steps.push(step));
    try {
      wire.write('booting\nlogin: ');
      await console.expect(/login: $/, { timeoutMs: 2000 });
      await console.recordStep(
        'command',
        'uname',
        async () => {
          wire.write('Linux\n');
          return (await console.expect('Linux', { timeoutMs: 2000 })).match[0];
        },
        (output) => ({ exitCode: 0, output }),
      );
      await assert.rejects(console.expect('never', { timeoutMs: 50 }), /never/);
      assert.deepEqual(
        steps.map(({ step, name, outcome, exitCode, output }) => ({ step, name, outcome, exitCode, output })),
        [
          { step: 'expect', name: '/login: $/', outcome: 'ok', exitCode: undefined, output: 'login: ' },
          { step: 'command', name: 'uname', outcome: 'ok', exitCode: 0, output: 'Linux' },
          { step: 'expect', name: 'never', outcome: 'timeout', exitCode: undefined, output: undefined },
        ],
      );
      assert.match(steps[2]?.error ?? '', /timed out|never/);
      for (const step of steps) assert.ok(step.durationMs >= 0);
    } finally {
      console.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the console's log file", () => {
  test('a log file that cannot be written is noted, not thrown: the console goes on in memory', async () => {
    const gone = mkdtempSync(join(tmpdir(), 'vmkit-console-gone-'));
    rmSync(gone, { recursive: true }); // as a machine's folder removed at close before a late open
    const console = new SerialConsole(join(gone, 'console.log'));
    console.replay(Buffer.from('still here\n'));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal((console.fileError as NodeJS.ErrnoException | undefined)?.code, 'ENOENT');
    assert.match(console.log, /still here/);
    console.close();
  });
});

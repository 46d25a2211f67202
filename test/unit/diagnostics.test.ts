// The diagnostics bundle of a failed test is bounded: each item within about 5 s and 256 KiB, so a
// wedged guest or a flood of output cannot hold it up or fill the disk (a stand-in machine here).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { collectDiagnostics } from '../../src/driver/diagnostics.js';
import type { Machine } from '../../src/machine/machine.js';

const scratch = mkdtempSync(join(tmpdir(), 'vmkit-diagnostics-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const KiB = 1024;

describe('diagnostics bundle', () => {
  test('an item the guest never answers is given up after about 5 s; a big one is cut to 256 KiB', async () => {
    const flood = `${'x'.repeat(99)}\n`.repeat(5000); // 500 KB
    const machine = {
      name: 'wedged',
      isRunning: true,
      stateDir: join(scratch, 'no-state'),
      config: { backdoor: true },
      getConsoleLog: () => flood,
      console: { transcript: { format: () => 'typed nothing\n' } },
      execute: (command: string) =>
        command === 'dmesg'
          ? new Promise(() => {}) // a wedged guest: never answers
          : Promise.resolve({ exitCode: 0, stdout: command.startsWith('ps') ? flood : '', stderr: '' }),
    } as unknown as Machine;
    const started = performance.now();
    const written = await collectDiagnostics(machine, scratch);
    const tookMs = performance.now() - started;
    assert.ok(tookMs < 10_000, `the bundle took ${tookMs} ms`);
    const read = (file: string) => readFileSync(join(scratch, 'wedged', file), 'utf8');
    assert.match(read('dmesg.txt'), /^not collected: /);
    for (const file of ['console.txt', 'ps.txt']) {
      assert.ok(written.includes(file), file);
      const text = read(file);
      assert.ok(text.startsWith('[... cut ...]\n'), `${file} says it was cut`);
      assert.equal(Buffer.byteLength(text), 256 * KiB + '[... cut ...]\n'.length, file);
    }
    assert.match(read('qemu.log'), /^not available: /);
  });
});

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { processRunsSync } from '../../src/util/scratch.js';

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`a process ended by ${signal} exits only once what its hooks killed is gone`, async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/slow-death.ts'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let slow = 0;
    try {
      const [chunk] = (await once(child.stdout, 'data', { signal: AbortSignal.timeout(30_000) })) as [Buffer];
      slow = Number(chunk.toString().trim());
      assert.ok(processRunsSync(slow), 'the slow-dying process runs before the signal');
      const exited = once(child, 'exit', { signal: AbortSignal.timeout(30_000) });
      child.kill(signal);
      const [, exitSignal] = (await exited) as [number | null, NodeJS.Signals | null];
      assert.equal(exitSignal, signal);
      assert.ok(!processRunsSync(slow), `the process its hooks killed outlived it after ${signal}`);
    } finally {
      child.kill('SIGKILL');
      if (slow && processRunsSync(slow)) process.kill(slow, 'SIGKILL');
    }
  });
}

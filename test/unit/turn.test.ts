import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { AbortedError, TimeoutError } from '../../src/errors.js';
import { takeTurn } from '../../src/util/turn.js';

describe('host-wide turns', () => {
  it('hands the turn to one waiter at a time, each once the holder releases it', async () => {
    const key = randomUUID();
    const order: string[] = [];
    const first = await takeTurn(key, 1000, 'the turn', 'first');
    const waiters = ['a', 'b', 'c'].map((name) =>
      takeTurn(key, 5000, 'the turn', name).then((turn) => {
        order.push(`${name} in`);
        setTimeout(() => {
          order.push(`${name} out`);
          turn.release();
        }, 20);
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(order, [], 'a waiter got the turn while it was held');
    first.release();
    await Promise.all(waiters);
    await new Promise((resolve) => setTimeout(resolve, 50));
    // Never two inside at once.
    for (let i = 0; i < order.length; i += 2) {
      assert.match(String(order[i]), / in$/);
      assert.equal(order[i + 1], String(order[i]).replace(' in', ' out'));
    }
    assert.equal(order.length, 6);
  });

  it('times out naming what was awaited and who holds it', async () => {
    const key = randomUUID();
    const held = await takeTurn(key, 1000, 'the turn', 'exec of t/p/i');
    const error = await takeTurn(key, 200, 'a turn on the agent of t/p/i', 'other').catch((e: Error) => e);
    held.release();
    assert.ok(error instanceof TimeoutError);
    assert.match(error.message, /a turn on the agent of t\/p\/i/);
    assert.match(
      error.message,
      new RegExp(`another client holds it \\(pid ${process.pid}: exec of t/p/i\\)`),
    );
  });

  it('stops waiting when its signal aborts, holding nothing', async () => {
    const key = randomUUID();
    const held = await takeTurn(key, 1000, 'the turn', 'holder');
    const controller = new AbortController();
    const waiting = takeTurn(key, 5000, 'the first boot', 'waiter', controller.signal).catch((e: Error) => e);
    setTimeout(() => controller.abort(), 50);
    const error = await waiting;
    assert.ok(error instanceof AbortedError, String(error));
    assert.match(error.message, /stopped waiting for the first boot: aborted/);
    held.release();
    // The aborted waiter took nothing: the turn is free at once.
    (await takeTurn(key, 200, 'the turn', 'next')).release();
  });

  it('is free again once a holding process is killed', async () => {
    const key = randomUUID();
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '-e',
        `import('./src/util/turn.ts').then(async ({ takeTurn }) => { await takeTurn(${JSON.stringify(key)}, 5000, 't', 'child'); console.log('held'); setInterval(() => {}, 1000); })`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    const waiting = takeTurn(key, 10_000, 'the turn', 'parent');
    child.kill('SIGKILL');
    (await waiting).release();
  });
});

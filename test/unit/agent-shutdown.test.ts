import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

/** Runs shutDownAgent in a child (it may end the process): its exit status and log. */
function shutDown(closeServer: string, deadlineMs: number) {
  const script = `
    import { shutDownAgent } from './src/cli/commands/agent-shutdown.ts';
    await shutDownAgent({
      why: 'SIGTERM',
      join: undefined,
      closeServer: ${closeServer},
      log: (line) => process.stderr.write(line + '\\n'),
      deadlineMs: ${deadlineMs},
    });
    process.stderr.write('returned\\n');`;
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { status: child.status, log: child.stderr };
}

test("an agent's shutdown that hangs ends the process at its deadline, saying what it waited for", () => {
  // A close that never ends, and a timer that would keep the process alive meanwhile.
  const { status, log } = shutDown('() => new Promise(() => setInterval(() => {}, 1000))', 300);
  assert.equal(status, 1, log);
  assert.match(log, /SIGTERM: finishing requests in flight/);
  assert.match(log, /shutdown: gave up after \d+ s, still finishing requests \(open: .*Timeout/);
  assert.doesNotMatch(log, /returned/);
});

test("an agent's shutdown that ends in time returns, and its deadline does not fire", () => {
  const { status, log } = shutDown('() => new Promise((resolve) => setTimeout(resolve, 100))', 5000);
  assert.equal(status, 0, log);
  assert.match(log, /returned/);
  assert.doesNotMatch(log, /gave up/);
});

// Machines as fixtures of node:test and of vitest: started before the tests, closed after, even on failure.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type Machine, useMachines } from '../../src/index.js';
import { alive, root, runProgram } from '../helpers.js';

describe('useMachines with node:test', () => {
  const vms = useMachines({ before, after }, { fixture: { memoryMiB: 128 } });
  let pid = 0;
  let kept: Machine | undefined;

  it('gives started machines to the tests', async () => {
    assert.equal(await vms.fixture.succeed('hostname'), 'fixture\n');
    pid = vms.fixture.pid;
    kept = vms.fixture;
  });

  it('keeps the same machine for the whole file', async () => {
    assert.equal(vms.fixture, kept);
    await vms.fixture.succeed('touch /tmp/from-the-second-test');
  });

  after(() => {
    // registered after useMachines' own after hook, so it runs once the machine is closed
    assert.ok(pid > 0 && !alive(pid), `QEMU ${pid} ended with the file`);
  });
});

describe('useMachines with vitest', () => {
  it('runs a vitest file whose machine is closed even though a test fails', async () => {
    const { code, stdout, stderr } = await runProgram(
      process.execPath,
      [`${root}node_modules/vitest/vitest.mjs`, 'run', '--root', root, 'test/vitest/fixture.test.ts'],
      { env: { CI: '1', NO_COLOR: '1', FORCE_COLOR: '0' }, timeoutMs: 180_000 },
    );
    const output = stdout + stderr;
    assert.equal(code, 1, output); // one test fails on purpose
    assert.match(output, /1 failed \| 1 passed/);
    const pid = Number(output.match(/fixture pid (\d+)/)?.[1]);
    assert.ok(pid > 0, output);
    assert.ok(!alive(pid), `QEMU ${pid} was left running by the vitest file`);
  });
});

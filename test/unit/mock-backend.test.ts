import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import {
  CommandFailedError,
  CommandTimeoutError,
  ConfigError,
  MockScriptError,
  type MockScriptOptions,
  mockBackend,
  startMachine,
  UnitStateError,
} from '../../src/index.js';
import { Runtime } from '../../src/runtime/runtime.js';

const runtime = new Runtime();
after(() => runtime.close());

async function mockMachine(options: MockScriptOptions, name = 'box') {
  const backend = mockBackend(options);
  const machine = await startMachine({ name, backend, runtime, commandTimeoutMs: 5_000 });
  return { backend, machine };
}

describe('a Machine on the mock backend', () => {
  test('execute and succeed answer from the script, by exact command and by pattern', async () => {
    const { backend, machine } = await mockMachine({
      script: [
        { command: 'hostname', stdout: 'box\n' },
        { command: /^cat \/etc\/os-release/, stdout: 'ID=mock\n', times: 2 },
        { command: 'false', status: 1, stderr: 'no\n' },
      ],
    });
    try {
      assert.equal(await machine.succeed('hostname'), 'box\n');
      assert.deepEqual(await machine.execute('cat /etc/os-release'), {
        exitCode: 0,
        stdout: 'ID=mock\n',
        stderr: '',
      });
      assert.equal(await machine.succeed('cat /etc/os-release | head -1'), 'ID=mock\n');
      const failed = await machine.succeed('false').catch((error: Error) => error);
      assert.ok(failed instanceof CommandFailedError, String(failed));
      assert.match(failed.message, /no/);
      assert.deepEqual(backend.unused(), []);
      backend.verify();
      assert.deepEqual(
        backend.commands.map((c) => c.answeredBy),
        [0, 1, 1, 2],
      );
    } finally {
      await machine.close();
    }
  });

  test('an unexpected command fails with MockScriptError naming it and what the script expected', async () => {
    const { machine } = await mockMachine({
      script: [{ command: 'systemctl start nginx' }, { command: /curl localhost/, stdout: 'ok' }],
    });
    try {
      await machine.succeed('systemctl start nginx');
      const error = await machine.execute('rm -rf /').catch((e: Error) => e);
      assert.ok(error instanceof MockScriptError, String(error));
      assert.equal(error.command, 'rm -rf /');
      assert.match(error.message, /unexpected command "rm -rf \/"/);
      assert.match(error.message, /\/curl localhost\//);
      assert.deepEqual(error.expected, ['/curl localhost/']);
      // The mock guest stops at the first surprise: later calls fail with the same error.
      await assert.rejects(machine.execute('curl localhost'), MockScriptError);
      assert.equal(machine.isRunning, false);
    } finally {
      await machine.close();
    }
  });

  test('ordered: each command must be the next step; `always` steps answer at any time', async () => {
    const { backend, machine } = await mockMachine({
      ordered: true,
      script: [
        { command: 'uptime', stdout: 'up\n', always: true },
        { command: 'step one' },
        { command: 'step two' },
      ],
    });
    try {
      await machine.succeed('uptime');
      await machine.succeed('step one');
      await machine.succeed('uptime');
      await assert.rejects(machine.succeed('step one'), (error: Error) => {
        assert.ok(error instanceof MockScriptError);
        assert.match(error.message, /in this order/);
        assert.deepEqual(error.expected, ['"uptime" (any number of times)', '"step two"']);
        return true;
      });
      assert.throws(() => backend.verify(), /never came:\n {2}"step two"/);
    } finally {
      await machine.close();
    }
  });

  test('waitForUnit, getUnitInfo and requireUnitState from unit steps', async () => {
    const { machine } = await mockMachine({
      script: [
        { unit: 'nginx.service', always: true },
        { unit: 'broken.service', state: 'failed', always: true },
      ],
    });
    try {
      await machine.waitForUnit('nginx.service');
      assert.equal((await machine.getUnitInfo('nginx.service')).ActiveState, 'active');
      await machine.requireUnitState('nginx.service');
      await machine.waitForUnit('broken.service', { state: 'failed' });
      const error = await machine.waitForUnit('broken.service').catch((e: Error) => e);
      assert.ok(error instanceof UnitStateError, String(error));
      assert.match(error.message, /broken\.service/);
    } finally {
      await machine.close();
    }
  });

  test('waitForOpenPort retries until the script says the port listens; waitForClosedPort', async () => {
    const { backend, machine } = await mockMachine({
      ordered: true,
      script: [{ port: 8080, open: false, times: 2 }, { port: 8080 }, { port: 9090, open: false }],
    });
    try {
      await machine.waitForOpenPort(8080, { timeoutMs: 10_000 });
      await machine.waitForClosedPort(9090);
      backend.verify();
      assert.equal(backend.commands.length, 4);
    } finally {
      await machine.close();
    }
  });

  test('a step that times out fails the call with CommandTimeoutError after its timeout', async () => {
    const { machine } = await mockMachine({ script: [{ command: 'sleep 100', timedOut: true }] });
    try {
      const started = performance.now();
      await assert.rejects(machine.execute('sleep 100', { timeoutMs: 1_000 }), CommandTimeoutError);
      assert.ok(performance.now() - started >= 900);
    } finally {
      await machine.close();
    }
  });

  test('streamed output, spawn, console text, shutdown', async () => {
    const { backend, machine } = await mockMachine({
      console: 'mock guest booted\n',
      script: [
        { command: 'make', stdout: 'built\n', stderr: 'warning\n' },
        { command: 'server --serve', stdout: 'listening\n' },
      ],
    });
    const chunks: string[] = [];
    const result = await machine.execute('make', { onStdout: (chunk) => chunks.push(chunk.toString()) });
    assert.deepEqual(result, { exitCode: 0, stdout: 'built\n', stderr: 'warning\n' });
    assert.deepEqual(chunks, ['built\n']);
    const server = await machine.spawn('server --serve');
    assert.equal((await server.wait()).exitCode, 0);
    await machine.waitForConsoleText('mock guest booted', { timeoutMs: 1_000 });
    await machine.shutdown({ timeoutMs: 2_000 });
    assert.equal(machine.isRunning, false);
    assert.equal(backend.commands.at(-1)?.answeredBy, 'builtin');
    await machine.close();
  });

  test('otherwise answers what no step matches', async () => {
    const { machine } = await mockMachine({ otherwise: { status: 0, stdout: 'fine\n' } });
    try {
      assert.equal(await machine.succeed('anything at all'), 'fine\n');
    } finally {
      await machine.close();
    }
  });

  test('bad scripts are ConfigErrors naming the step', () => {
    assert.throws(
      () => mockBackend({ script: [{ stdout: 'x' }] }),
      (error: Error) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, /exactly one of command, unit or port/);
        return true;
      },
    );
    assert.throws(() => mockBackend({ script: [{ command: 'a', status: 300 }] }), ConfigError);
  });
});

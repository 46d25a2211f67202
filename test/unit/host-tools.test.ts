import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { processesNaming } from '../../src/runtime/detached.js';
import { runTool } from '../../src/util/exec.js';
import { installHint, toolPackage } from '../../src/util/tool-packages.js';
import { SYSTEM_TOOL_DIRS, toolEnv, toolSearchPath, which } from '../../src/util/which.js';

describe('host tools for an ordinary account', () => {
  test('the system tool folders are searched after PATH, once each', () => {
    assert.deepEqual(toolSearchPath('/usr/local/bin:/usr/bin:/bin'), [
      '/usr/local/bin',
      '/usr/bin',
      '/bin',
      ...SYSTEM_TOOL_DIRS,
    ]);
    assert.deepEqual(toolSearchPath('/usr/sbin:/usr/bin'), [
      '/usr/sbin',
      '/usr/bin',
      '/usr/local/sbin',
      '/sbin',
    ]);
    assert.ok(toolEnv({ PATH: '/usr/bin' }).PATH?.split(':').includes('/usr/sbin'));
  });

  test('depmod and mke2fs are found and run with the PATH an ordinary account has', async () => {
    const saved = process.env.PATH;
    process.env.PATH = '/usr/local/bin:/usr/bin:/bin';
    try {
      assert.equal(await which('depmod'), '/usr/sbin/depmod');
      const { stderr } = await runTool('mke2fs', ['-V'], { timeoutMs: 10_000 });
      assert.match(stderr, /mke2fs|e2fsprogs/);
    } finally {
      process.env.PATH = saved;
    }
  });

  test('a missing tool is one line naming the Debian package', async () => {
    assert.equal(toolPackage('/usr/sbin/depmod'), 'kmod');
    assert.match(installHint('newuidmap'), /newuidmap is not installed: (sudo )?apt-get install uidmap$/);
    await assert.rejects(
      runTool('vmkit-no-such-tool', []),
      /cannot run vmkit-no-such-tool: vmkit-no-such-tool is not installed$/,
    );
  });

  for (const [signal, ownHandler] of [
    ['SIGINT', false],
    ['SIGTERM', false],
    ['SIGTERM', true],
  ] as const) {
    const how = ownHandler ? 'its own handler exits 0' : 'the signal ends it';
    test(`a host tool ends with vmkit on ${signal} (${how})`, async () => {
      // A duration no other process has: the marker that finds this test's sleep.
      const marker = `${600 + Math.floor(Math.random() * 1000)}.${process.pid}`;
      const args = ['--import', 'tsx', 'test/fixtures/run-tool-sleep.ts', marker];
      const child = spawn(process.execPath, ownHandler ? [...args, 'own-handler'] : args, {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const sleeps = () => processesNaming(marker).filter((p) => p.program.endsWith('sleep'));
      try {
        const [chunk] = (await once(child.stdout, 'data', { signal: AbortSignal.timeout(30_000) })) as [
          Buffer,
        ];
        assert.equal(chunk.toString(), 'started\n');
        assert.equal(sleeps().length, 1, 'the sleep runs before the signal');
        child.kill(signal);
        const [code, exitSignal] = (await once(child, 'exit', { signal: AbortSignal.timeout(30_000) })) as [
          number | null,
          NodeJS.Signals | null,
        ];
        // A program's own handler keeps the say: vmkit's hooks do not end the process under it.
        assert.deepEqual(
          { code, exitSignal },
          ownHandler ? { code: 0, exitSignal: null } : { code: null, exitSignal: signal },
        );
        assert.deepEqual(sleeps(), [], `the sleep outlived its program's ${signal}`);
      } finally {
        child.kill('SIGKILL');
      }
    });
  }
});

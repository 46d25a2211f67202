import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { subordinateRange } from '../../src/images/rootless.js';
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

  test('subordinate id ranges are read by name or uid, and must hold 65536 ids', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-subid-'));
    const file = join(dir, 'subuid');
    writeFileSync(file, 'alice:100000:65536\n1001:200000:65536\nbob:300000:1000\n');
    assert.equal(subordinateRange(file, 'alice', 1000), true);
    assert.equal(subordinateRange(file, 'carol', 1001), true);
    assert.equal(subordinateRange(file, 'bob', 1002), false);
    assert.equal(subordinateRange(file, 'dave', 1003), false);
    assert.equal(subordinateRange(join(dir, 'missing'), 'alice', 1000), false);
  });
});

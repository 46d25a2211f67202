import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ContentStore } from '../../src/images/store.js';
import { cacheDir } from '../../src/util/paths.js';

async function withStore(body: (root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'vmkit-store-test-'));
  try {
    await body(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

describe('ContentStore', { timeout: 10_000 }, () => {
  test('keys are stable for equal inputs and differ for different ones', () => {
    assert.equal(ContentStore.key({ a: 1, b: [1, 2] }), ContentStore.key({ a: 1, b: [1, 2] }));
    assert.notEqual(ContentStore.key({ a: 1 }), ContentStore.key({ a: 2 }));
  });

  test('builds an entry once; later calls reuse it without building', async () => {
    await withStore(async (root) => {
      const store = new ContentStore(root);
      let builds = 0;
      const build = async (scratch: string) => {
        builds++;
        await writeFile(join(scratch, 'payload'), 'built');
        return { name: 'x' };
      };
      assert.deepEqual(await store.ensure('k1', build), { name: 'x' });
      assert.deepEqual(await store.ensure('k1', build), { name: 'x' });
      assert.equal(builds, 1, 'the second call reused the entry');
      assert.equal(await readFile(join(store.pathOf('k1'), 'payload'), 'utf8'), 'built');
    });
  });

  test('concurrent builders of one key both succeed and leave one whole entry', async () => {
    await withStore(async (root) => {
      const slowBuild = (marker: string) => async (scratch: string) => {
        await writeFile(join(scratch, 'payload'), marker);
        await new Promise((resolve) => setTimeout(resolve, 50));
        return { marker };
      };
      const [first, second] = await Promise.all([
        new ContentStore(root).ensure('k', slowBuild('first')),
        new ContentStore(root).ensure('k', slowBuild('second')),
      ]);
      assert.deepEqual(first, second, 'both see the same winning entry');
      const payload = await readFile(join(root, 'k', 'payload'), 'utf8');
      assert.equal(
        payload,
        (first as { marker: string }).marker,
        'files and manifest come from the same build',
      );
      assert.deepEqual(await readdir(root), ['k'], 'no scratch folder is left');
    });
  });

  test('a failing build leaves nothing behind and can be retried', async () => {
    await withStore(async (root) => {
      const store = new ContentStore(root);
      await assert.rejects(
        store.ensure('k', async () => {
          throw new Error('download failed');
        }),
        /download failed/,
      );
      assert.deepEqual(await readdir(root), [], 'no half-built entry');
      assert.deepEqual(await store.ensure('k', async () => ({ ok: true })), { ok: true });
    });
  });
});

describe('the cache folder', () => {
  test('is $VMKIT_CACHE_DIR, else $XDG_CACHE_HOME/vmkit, else ~/.cache/vmkit', () => {
    const saved = { cache: process.env.VMKIT_CACHE_DIR, xdg: process.env.XDG_CACHE_HOME };
    try {
      process.env.VMKIT_CACHE_DIR = '/srv/cache';
      process.env.XDG_CACHE_HOME = '/srv/xdg';
      assert.equal(cacheDir(), '/srv/cache');
      delete process.env.VMKIT_CACHE_DIR;
      assert.equal(cacheDir(), '/srv/xdg/vmkit');
      delete process.env.XDG_CACHE_HOME;
      assert.equal(cacheDir(), join(homedir(), '.cache', 'vmkit'));
    } finally {
      for (const [name, value] of [
        ['VMKIT_CACHE_DIR', saved.cache],
        ['XDG_CACHE_HOME', saved.xdg],
      ] as const)
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
    }
  });
});

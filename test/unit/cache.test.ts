import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { c as createTar, x as extractTar } from 'tar';
import { chooseAccel } from '../../src/backends/accel.js';
import { backendNamed } from '../../src/backends/index.js';
import { exportCache } from '../../src/cache/export.js';
import { importCache } from '../../src/cache/import.js';
import { ConfigError } from '../../src/errors.js';
import { Runtime } from '../../src/runtime/runtime.js';
import { sparseDigest } from '../../src/util/sparse.js';
import { runProgram } from '../helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'vmkit-cache-'));
const runtime = new Runtime();
after(async () => {
  await runtime.close();
  rmSync(dir, { recursive: true, force: true });
});

const KEY = '0123456789abcdef0123456789abcdef';

/** A cache folder as `$XDG_CACHE_HOME/vmkit`, with one small fake image and three snapshots. */
async function fakeCache(xdg: string): Promise<string> {
  const cache = join(xdg, 'vmkit');
  const image = join(cache, 'images', KEY);
  mkdirSync(image, { recursive: true });
  writeFileSync(join(image, 'vmlinuz'), 'kernel bytes '.repeat(500));
  writeFileSync(join(image, 'initrd.cpio'), 'initrd bytes '.repeat(300));
  const imageManifest = {
    name: 'tiny',
    key: KEY,
    kernel: 'vmlinuz',
    initrd: 'initrd.cpio',
    cmdline: 'console=ttyS0',
    kernelRelease: '6.1',
    packages: [],
    modules: [],
    builtAt: '2026-12-06T00:00:00Z',
  };
  writeFileSync(join(image, 'manifest.json'), JSON.stringify(imageManifest));
  const here = await backendNamed('qemu')
    .version(runtime)
    .catch(() => 'QEMU not installed');
  const { accel } = await chooseAccel('auto', runtime);
  const snapshot = async (id: string, vmmVersion: string, damage = false) => {
    const folder = join(cache, 'snapshots', id);
    mkdirSync(folder, { recursive: true });
    const state = join(folder, 'state');
    writeFileSync(state, `saved state of ${id}`.repeat(100));
    const { digest, bytes } = await sparseDigest(state);
    if (damage) writeFileSync(state, `saved state of ${id}`.repeat(99).padEnd(bytes, 'X'));
    const manifest = {
      format: 4,
      id,
      name: id.replace(/-[0-9a-f]+$/, ''),
      createdAt: '2026-12-06T00:00:00Z',
      source: 'box',
      identity: {
        backend: 'qemu',
        imageKey: KEY,
        memoryMiB: 256,
        cpus: 1,
        accel,
        nics: 0,
        disks: [],
        qemuArgs: [],
        vmmVersion,
      },
      image: {
        name: 'tiny',
        key: KEY,
        dir: image,
        kernel: join(image, 'vmlinuz'),
        initrd: join(image, 'initrd.cpio'),
        cmdline: '',
        kernelRelease: '6.1',
        profile: 'tiny',
      },
      macs: [],
      nics: [],
      ramInStream: true,
      files: { state: { digest, bytes } },
    };
    writeFileSync(join(folder, 'manifest.json'), JSON.stringify(manifest));
    writeFileSync(join(folder, 'verified.json'), '{}');
  };
  await snapshot('suite.box-aaaaaaaaaaaa', here);
  await snapshot('suite.old-qemu-bbbbbbbbbbbb', 'QEMU emulator version 1.0');
  await snapshot('suite.damaged-cccccccccccc', here, true);
  return cache;
}

describe('vmkit cache export and import', () => {
  let from: string;
  const to = join(dir, 'other-user', 'vmkit');
  const archive = join(dir, 'cache.tar.gz');
  before(async () => {
    from = await fakeCache(join(dir, 'first-user'));
  });

  test('round trip into another cache folder: image paths rewritten, refusals with their reasons', async () => {
    const exported = await exportCache(archive, { cacheDir: from });
    assert.deepEqual(exported.images, [KEY]);
    assert.equal(exported.snapshots.length, 3);
    const outcomes = await importCache(archive, { cacheDir: to, runtime });
    const by = (id: string) => outcomes.find((entry) => entry.id === id);
    assert.equal(by(KEY)?.result, 'imported');
    assert.equal(by('suite.box-aaaaaaaaaaaa')?.result, 'imported', by('suite.box-aaaaaaaaaaaa')?.reason);
    assert.equal(by('suite.old-qemu-bbbbbbbbbbbb')?.result, 'refused');
    assert.match(
      by('suite.old-qemu-bbbbbbbbbbbb')?.reason ?? '',
      /taken with "QEMU emulator version 1\.0" but this is "/,
    );
    assert.equal(by('suite.damaged-cccccccccccc')?.result, 'refused');
    assert.match(
      by('suite.damaged-cccccccccccc')?.reason ?? '',
      /tampered with: state does not match its checksum/,
    );

    // The imported snapshot boots from this cache's copy of the image, not the exporter's path.
    const manifest = JSON.parse(
      readFileSync(join(to, 'snapshots', 'suite.box-aaaaaaaaaaaa', 'manifest.json'), 'utf8'),
    );
    assert.equal(manifest.image.dir, join(to, 'images', KEY));
    assert.equal(manifest.image.kernel, join(to, 'images', KEY, 'vmlinuz'));
    assert.equal(manifest.image.initrd, join(to, 'images', KEY, 'initrd.cpio'));
    assert.equal(
      readFileSync(manifest.image.kernel, 'utf8'),
      readFileSync(join(from, 'images', KEY, 'vmlinuz'), 'utf8'),
    );
    // Refused entries are not in the store, and nothing half-written is left beside it.
    assert.deepEqual(readdirSync(join(to, 'snapshots')), ['suite.box-aaaaaaaaaaaa']);
    assert.deepEqual(
      readdirSync(to).filter((name) => name.startsWith('.')),
      [],
    );

    const again = await importCache(archive, { cacheDir: to, runtime });
    assert.equal(again.find((entry) => entry.id === KEY)?.result, 'present');
    assert.equal(again.find((entry) => entry.id === 'suite.box-aaaaaaaaaaaa')?.result, 'present');
  });

  test('--only images carries no snapshot; --only snapshots no image', async () => {
    const images = await exportCache(join(dir, 'images.tar'), { cacheDir: from, only: 'images' });
    assert.deepEqual([images.images.length, images.snapshots.length], [1, 0]);
    const snapshots = await exportCache(join(dir, 'snapshots.tar'), { cacheDir: from, only: 'snapshots' });
    assert.deepEqual([snapshots.images.length, snapshots.snapshots.length], [0, 3]);
    // Into an empty cache, snapshots without their image are refused: their image is gone.
    const outcomes = await importCache(join(dir, 'snapshots.tar'), {
      cacheDir: join(dir, 'empty', 'vmkit'),
      runtime,
    });
    assert.match(
      outcomes.find((entry) => entry.id === 'suite.box-aaaaaaaaaaaa')?.reason ?? '',
      /its image is gone/,
    );
  });

  test('an image file damaged in the archive is refused, and so is the snapshot that needs it', async () => {
    const unpacked = join(dir, 'unpacked');
    mkdirSync(unpacked);
    await extractTar({ file: archive, cwd: unpacked });
    const kernel = join(unpacked, 'images', KEY, 'vmlinuz');
    const bytes = readFileSync(kernel);
    bytes[10] = (bytes[10] ?? 0) ^ 0xff;
    writeFileSync(kernel, bytes);
    const damaged = join(dir, 'damaged.tar');
    await createTar({ file: damaged, cwd: unpacked }, readdirSync(unpacked).sort().reverse());
    const outcomes = await importCache(damaged, { cacheDir: join(dir, 'third', 'vmkit'), runtime });
    assert.equal(outcomes.find((entry) => entry.id === KEY)?.result, 'refused');
    assert.match(
      outcomes.find((entry) => entry.id === KEY)?.reason ?? '',
      /damaged: vmlinuz does not match its digest/,
    );
    assert.match(
      outcomes.find((entry) => entry.id === 'suite.box-aaaaaaaaaaaa')?.reason ?? '',
      /its image is gone/,
    );
    assert.equal(existsSync(join(dir, 'third', 'vmkit', 'images', KEY)), false);
  });

  test('what a killed import left (its scratch folder) is removed by the next one; the stores never see it', async () => {
    const cache = join(dir, 'killed', 'vmkit');
    const gone = spawnSync(process.execPath, ['-e', '']).pid as number; // a pid no process has now
    const left = join(cache, `.import-${gone}-abcdef`);
    mkdirSync(join(left, 'images', KEY), { recursive: true });
    writeFileSync(join(left, 'images', KEY, 'vmlinuz'), 'half');
    const outcomes = await importCache(archive, { cacheDir: cache, runtime });
    assert.equal(outcomes.find((entry) => entry.id === KEY)?.result, 'imported');
    assert.equal(existsSync(left), false);
    assert.deepEqual(readdirSync(cache).sort(), ['images', 'snapshots']);
  });

  test('bad input is a ConfigError: a missing file, a file that is no archive, --only of another kind', async () => {
    const options = { cacheDir: join(dir, 'bad', 'vmkit'), runtime };
    await assert.rejects(
      importCache(join(dir, 'nope.tar'), options),
      (error: Error) => error instanceof ConfigError && /cannot read it: ENOENT/.test(error.message),
    );
    writeFileSync(join(dir, 'text.tar'), 'this is not a tar file at all\n'.repeat(40));
    await assert.rejects(importCache(join(dir, 'text.tar'), options), ConfigError);
    await assert.rejects(
      exportCache(join(dir, 'x.tar'), { cacheDir: from, only: 'disks' as 'images' }),
      /--only disks: use images or snapshots/,
    );
    await assert.rejects(
      exportCache(join(dir, 'no', 'such', 'x.tar'), { cacheDir: from }),
      /the folder .* does not exist/,
    );
  });

  test('the CLI moves a cache between two XDG_CACHE_HOME folders', async () => {
    const cli = (args: string[], xdg: string) =>
      runProgram(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'cache', ...args], {
        env: { XDG_CACHE_HOME: xdg, VMKIT_CACHE_DIR: '' },
        timeoutMs: 60_000,
      });
    const file = join(dir, 'cli.tar');
    const exported = await cli(['export', file], join(dir, 'first-user'));
    assert.equal(exported.code, 0, exported.stderr);
    assert.match(exported.stdout, /exported 1 image\(s\) and 3 snapshot\(s\) from .*first-user\/vmkit into/);
    const imported = await cli(['import', file], join(dir, 'cli-user'));
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /imported\timage 0123456789abcdef0123456789abcdef \(tiny\)/);
    assert.match(
      imported.stdout,
      /refused\tsnapshot suite\.old-qemu-bbbbbbbbbbbb \(suite\.old-qemu\): taken with/,
    );
    assert.match(imported.stdout, /2 imported, 0 already present, 2 refused, into .*cli-user\/vmkit/);
    const bad = await cli(['export', file, '--only', 'disks'], join(dir, 'first-user'));
    assert.equal(bad.code, 2, bad.stderr);
  });
});

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ImageError } from '../../src/errors.js';
import { type CpioEntry, writeCpio } from '../../src/images/cpio.js';
import { loadOrder, moduleName, parseModulesDep } from '../../src/images/modules.js';

const V = 'kernel/drivers/virtio';

/** Modelled on Debian's modules.dep (dependencies listed after the colon, deepest last). */
const MODULES_DEP = [
  `${V}/virtio_ring.ko.xz:`,
  `${V}/virtio.ko.xz: ${V}/virtio_ring.ko.xz`,
  `${V}/virtio_pci_legacy_dev.ko.xz:`,
  `${V}/virtio_pci_modern_dev.ko.xz:`,
  `${V}/virtio_pci.ko.xz: ${V}/virtio_pci_legacy_dev.ko.xz ${V}/virtio_pci_modern_dev.ko.xz ${V}/virtio.ko.xz ${V}/virtio_ring.ko.xz`,
  'kernel/drivers/char/virtio_console.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz',
  'kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/char/hw_random/rng-core.ko.xz',
  'kernel/drivers/char/hw_random/rng-core.ko.xz:',
  'kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz',
  'kernel/fs/netfs/netfs.ko.xz:',
  'kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz',
  '',
].join('\n');

/** Asserts that every module in `order` comes after all of its dependencies, and appears once. */
function assertDependenciesFirst(order: string[], dep = MODULES_DEP) {
  const modules = parseModulesDep(dep);
  const position = new Map(order.map((path, index) => [moduleName(path), index]));
  assert.equal(position.size, order.length, `a module appears twice: ${order.join(', ')}`);
  for (const [name, index] of position) {
    for (const needed of modules.get(name)?.deps ?? []) {
      const at = position.get(needed);
      assert.ok(at !== undefined, `${needed} (needed by ${name}) is missing from the order`);
      assert.ok(at < index, `${needed} must load before ${name}: ${order.map(moduleName).join(' ')}`);
    }
  }
}

describe('moduleName', () => {
  test('strips the directory and every compressed or plain .ko suffix', () => {
    assert.equal(moduleName('kernel/drivers/char/virtio_console.ko.xz'), 'virtio_console');
    assert.equal(moduleName('kernel/drivers/char/virtio_console.ko.gz'), 'virtio_console');
    assert.equal(moduleName('kernel/drivers/char/virtio_console.ko.zst'), 'virtio_console');
    assert.equal(moduleName('kernel/drivers/char/virtio_console.ko'), 'virtio_console');
    assert.equal(moduleName('virtio_console'), 'virtio_console');
  });

  test('dashes become underscores, in names and in file names', () => {
    assert.equal(moduleName('virtio-rng'), 'virtio_rng');
    assert.equal(moduleName('kernel/drivers/char/hw_random/virtio-rng.ko'), 'virtio_rng');
    assert.equal(moduleName('kernel/drivers/char/hw_random/rng-core.ko.xz'), 'rng_core');
  });

  test('only a trailing .ko suffix is stripped', () => {
    assert.equal(moduleName('kernel/foo.ko.xz/bar_ko.ko'), 'bar_ko');
    assert.equal(moduleName('kobject'), 'kobject');
  });
});

describe('parseModulesDep', () => {
  test('maps each module to its path and its direct dependencies, by normalised name', () => {
    const modules = parseModulesDep(MODULES_DEP);
    assert.equal(modules.size, 11);
    assert.deepEqual(modules.get('virtio_pci'), {
      path: `${V}/virtio_pci.ko.xz`,
      deps: ['virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio', 'virtio_ring'],
    });
    assert.deepEqual(modules.get('virtio_ring'), { path: `${V}/virtio_ring.ko.xz`, deps: [] });
    assert.deepEqual(modules.get('virtio_rng'), {
      path: 'kernel/drivers/char/hw_random/virtio-rng.ko.xz',
      deps: ['rng_core'],
    });
    assert.equal(modules.get('virtio-rng'), undefined, 'keys use underscores');
  });

  test('tolerates CRLF, blank lines and extra spaces', () => {
    const modules = parseModulesDep('\r\na/x.ko:  b/y.ko   c/z-z.ko \r\n\r\nb/y.ko:\r\nc/z-z.ko:\r\n');
    assert.deepEqual([...modules.keys()], ['x', 'y', 'z_z']);
    assert.deepEqual(modules.get('x'), { path: 'a/x.ko', deps: ['y', 'z_z'] });
    assert.deepEqual(modules.get('y'), { path: 'b/y.ko', deps: [] });
  });
});

describe('loadOrder', () => {
  test('virtio_pci: every dependency before its dependents, each once', () => {
    const order = loadOrder(MODULES_DEP, ['virtio_pci']);
    assert.equal(order.length, 5);
    assert.deepEqual(
      new Set(order.map(moduleName)),
      new Set(['virtio_pci', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio', 'virtio_ring']),
    );
    assertDependenciesFirst(order);
    assert.equal(order.at(-1), `${V}/virtio_pci.ko.xz`);
    assert.ok(
      order.indexOf(`${V}/virtio_ring.ko.xz`) < order.indexOf(`${V}/virtio.ko.xz`),
      'virtio_ring must load before virtio',
    );
  });

  test('several wanted modules sharing dependencies: each module appears once, in a valid order', () => {
    const wanted = ['virtio_console', '9pnet_virtio', 'virtio_pci', 'virtio', 'virtio_ring'];
    const order = loadOrder(MODULES_DEP, wanted);
    assertDependenciesFirst(order);
    assert.deepEqual(
      new Set(order.map(moduleName)),
      new Set([...wanted, 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', '9pnet', 'netfs']),
    );
    assert.equal(order.length, 9);
  });

  test('returns the paths exactly as modules.dep spells them', () => {
    const order = loadOrder(MODULES_DEP, ['virtio-rng']);
    assert.deepEqual(order, [
      'kernel/drivers/char/hw_random/rng-core.ko.xz',
      'kernel/drivers/char/hw_random/virtio-rng.ko.xz',
    ]);
  });

  test('dashes and underscores are equivalent in wanted names and in modules.dep', () => {
    const dep = 'kernel/a/virtio-rng.ko:\nkernel/a/virtio_blk.ko: kernel/a/virtio-rng.ko\n';
    assert.deepEqual(loadOrder(dep, ['virtio_rng']), ['kernel/a/virtio-rng.ko']);
    assert.deepEqual(loadOrder(dep, ['virtio-rng']), ['kernel/a/virtio-rng.ko']);
    assert.deepEqual(loadOrder(dep, ['virtio-blk', 'virtio_rng', 'virtio-rng.ko']), [
      'kernel/a/virtio-rng.ko',
      'kernel/a/virtio_blk.ko',
    ]);
  });

  test('a module already loaded as a dependency is not repeated when wanted later', () => {
    const order = loadOrder(MODULES_DEP, ['virtio', 'virtio_ring']);
    assert.deepEqual(order, [`${V}/virtio_ring.ko.xz`, `${V}/virtio.ko.xz`]);
  });

  test('no modules wanted gives an empty order', () => {
    assert.deepEqual(loadOrder(MODULES_DEP, []), []);
  });

  test('an unknown module is an ImageError naming it', () => {
    assert.throws(
      () => loadOrder(MODULES_DEP, ['virtio_console', 'virtio_gpu']),
      (error: unknown) => {
        assert.ok(error instanceof ImageError, `expected ImageError, got ${String(error)}`);
        assert.match(error.message, /virtio_gpu/);
        assert.match(error.message, /modules\.dep/);
        return true;
      },
    );
  });

  test('an unknown dependency is an ImageError naming it and the module that needs it', () => {
    const dep = 'kernel/a/virtio_blk.ko: kernel/a/missing_dep.ko\n';
    assert.throws(
      () => loadOrder(dep, ['virtio_blk']),
      (error: unknown) => {
        assert.ok(error instanceof ImageError, `expected ImageError, got ${String(error)}`);
        assert.match(error.message, /missing_dep/);
        assert.match(error.message, /virtio_blk/);
        return true;
      },
    );
  });

  test('a dependency cycle is an ImageError, not endless recursion', () => {
    const dep = 'k/a.ko: k/b.ko\nk/b.ko: k/c.ko\nk/c.ko: k/a.ko\n';
    assert.throws(
      () => loadOrder(dep, ['a']),
      (error: unknown) => error instanceof ImageError && /cycle/.test(error.message),
    );
  });
});

const hasCpio = spawnSync('sh', ['-c', 'command -v cpio'], { encoding: 'utf8' }).status === 0;
const NO_CPIO = 'the system cpio tool is not installed';

/** Runs the system cpio with `archive` on stdin. */
function cpio(args: string[], archive: Buffer, cwd: string) {
  const result = spawnSync('cpio', args, { cwd, input: archive, timeout: 5000, encoding: 'buffer' });
  assert.equal(result.error, undefined, `cpio failed to run: ${result.error}`);
  const stderr = result.stderr.toString();
  assert.equal(result.status, 0, `cpio ${args.join(' ')} exited with ${result.status}: ${stderr}`);
  return { stdout: result.stdout.toString(), stderr };
}

describe('writeCpio', { timeout: 10_000 }, () => {
  const binary = Buffer.from(Array.from({ length: 1001 }, (_, i) => (i * 37 + 11) % 256)); // odd length, all byte values
  const entries: CpioEntry[] = [
    { type: 'dir', path: 'etc', mode: 0o750 },
    { type: 'file', path: 'etc/blob.bin', data: binary, mode: 0o640 },
    { type: 'file', path: 'etc/one', data: Buffer.from('x') },
    { type: 'dir', path: '/bin' }, // a leading slash is stripped
    { type: 'file', path: 'bin/tool', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
    { type: 'file', path: 'bin/suid', data: Buffer.from('s'), mode: 0o4755 },
    { type: 'symlink', path: 'bin/blob', target: '../etc/blob.bin' },
    { type: 'symlink', path: 'sh', target: '/bin/busybox' },
    { type: 'file', path: 'empty', data: Buffer.alloc(0), mode: 0o600 },
    { type: 'file', path: 'etc/name-of-odd-length-x', data: Buffer.from('last') },
  ];

  test('the archive is "newc", 4-byte aligned, ends with a trailer and is reproducible', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-cpio-test-'));
    try {
      await writeCpio(join(dir, 'a.cpio'), entries);
      await writeCpio(join(dir, 'b.cpio'), entries);
      const a = await readFile(join(dir, 'a.cpio'));
      const b = await readFile(join(dir, 'b.cpio'));
      assert.ok(a.equals(b), 'two writes of the same entries differ');
      assert.equal(a.subarray(0, 6).toString(), '070701');
      assert.equal(a.length % 4, 0);
      const trailer = a.lastIndexOf('TRAILER!!!\0');
      assert.ok(trailer > 0, 'no trailer');
      // The trailer header starts 110 bytes before its name, on a 4-byte boundary.
      assert.equal((trailer - 110) % 4, 0);
      assert.equal(a.subarray(trailer - 110, trailer - 104).toString(), '070701');
      // Every header starts on a 4-byte boundary.
      for (let at = a.indexOf('070701'); at >= 0; at = a.indexOf('070701', at + 1)) {
        if (at <= trailer) assert.equal(at % 4, 0, `a header-like magic at unaligned offset ${at}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('system cpio lists and extracts it: contents, modes and symlink targets match', async (t) => {
    if (!hasCpio) {
      t.skip(NO_CPIO);
      return;
    }
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-cpio-test-'));
    try {
      const archivePath = join(dir, 'initrd.cpio');
      await writeCpio(archivePath, entries);
      const archive = await readFile(archivePath);

      const listing = cpio(['-it'], archive, dir);
      assert.deepEqual(
        listing.stdout.trim().split('\n'),
        entries.map((e) => e.path.replace(/^\/+/, '')),
      );

      const verbose = cpio(['-itv'], archive, dir).stdout;
      assert.match(verbose, /^drwxr-x---\s.*\setc$/m);
      assert.match(verbose, /^-rw-r-----\s.*\s1001\s.*\setc\/blob\.bin$/m);
      assert.match(verbose, /^-rwxr-xr-x\s.*\sbin\/tool$/m);
      assert.match(verbose, /^lrwxrwxrwx\s.*\sbin\/blob -> \.\.\/etc\/blob\.bin$/m);
      assert.match(verbose, /^-rw-------\s.*\sempty$/m);
      assert.match(verbose, /^-rwsr-xr-x\s.*\sbin\/suid$/m);

      const root = join(dir, 'root');
      await mkdir(root);
      const extracted = cpio(['-idmv', '--no-absolute-filenames'], archive, root);
      assert.doesNotMatch(extracted.stderr, /junk|warning|error|truncat/i);

      assert.ok((await readFile(join(root, 'etc/blob.bin'))).equals(binary), 'binary content differs');
      assert.equal(await readFile(join(root, 'etc/one'), 'utf8'), 'x');
      assert.equal(await readFile(join(root, 'bin/tool'), 'utf8'), '#!/bin/sh\necho hi\n');
      assert.equal((await readFile(join(root, 'empty'))).length, 0);
      assert.equal(await readFile(join(root, 'etc/name-of-odd-length-x'), 'utf8'), 'last');

      // GNU cpio restores the archived permission bits exactly (it does not apply the umask).
      const mode = async (path: string) => {
        const stats = await lstat(join(root, path));
        return { type: stats.mode & 0o170000, perms: stats.mode & 0o7777 };
      };
      assert.deepEqual(await mode('etc'), { type: 0o040000, perms: 0o750 });
      assert.deepEqual(await mode('etc/blob.bin'), { type: 0o100000, perms: 0o640 });
      assert.deepEqual(await mode('etc/one'), { type: 0o100000, perms: 0o644 }, 'default file mode');
      assert.deepEqual(await mode('bin'), { type: 0o040000, perms: 0o755 }, 'default directory mode');
      assert.deepEqual(await mode('bin/tool'), { type: 0o100000, perms: 0o755 });
      assert.deepEqual(await mode('bin/suid'), { type: 0o100000, perms: 0o4755 });
      assert.deepEqual(await mode('empty'), { type: 0o100000, perms: 0o600 });
      assert.equal((await mode('bin/blob')).type, 0o120000);

      assert.ok((await lstat(join(root, 'bin/blob'))).isSymbolicLink());
      assert.equal(await readlink(join(root, 'bin/blob')), '../etc/blob.bin');
      assert.equal(await readlink(join(root, 'sh')), '/bin/busybox');
      assert.ok(
        (await readFile(join(root, 'bin/blob'))).equals(binary),
        'the symlink does not resolve to the file',
      );

      // Times are fixed at the epoch (-m keeps them).
      assert.equal((await lstat(join(root, 'etc/one'))).mtimeMs, 0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('writing into a missing directory rejects instead of crashing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-cpio-test-'));
    try {
      await assert.rejects(writeCpio(join(dir, 'no', 'such', 'dir', 'x.cpio'), entries), /ENOENT/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

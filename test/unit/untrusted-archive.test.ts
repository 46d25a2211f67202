// The unpacker for archives from guests: crafted archives that try to plant privileges, device
// nodes, or files outside the target, and a real tar of a folder made with mknod and chown.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Header, type HeaderData } from 'tar';
import { ConfigError } from '../../src/errors.js';
import { checkCall } from '../../src/machine/calls.js';
import { copyOut } from '../../src/machine/copies.js';
import type { MachineInternals } from '../../src/machine/machine.js';
import { unpackUntrusted } from '../../src/util/untrusted-archive.js';

const asRoot = process.getuid?.() === 0;
const needsRoot = asRoot ? false : 'needs root (mknod, chown to other users)';
const umask = process.umask();

type Entry = HeaderData & { body?: string };

/** A tar archive of exactly these entries, headers written by hand (no file system involved). */
function tarOf(entries: Entry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const { body, ...data } of entries) {
    const content = Buffer.from(body ?? '');
    const header = new Header({
      mode: 0o644,
      uid: 0,
      gid: 0,
      mtime: new Date(),
      size: content.length,
      ...data,
    });
    const block = Buffer.alloc(512);
    header.encode(block);
    blocks.push(block, content, Buffer.alloc((512 - (content.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

const isLink = (path: string) =>
  lstat(path).then(
    (info) => info.isSymbolicLink(),
    () => false,
  );

describe('unpackUntrusted', () => {
  let scratch: string;
  let count = 0;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vmkit-untrusted-'));
  });
  after(() => rm(scratch, { recursive: true, force: true }));

  /** Unpacks `entries` into a fresh folder `<case>/in`; `<case>/` is the outside it must not touch. */
  async function unpack(entries: Entry[], options: { keepOwnership?: boolean } = {}) {
    const around = join(scratch, `case${++count}`);
    const folder = join(around, 'in');
    await mkdir(folder, { recursive: true });
    await writeFile(join(around, 'archive.tar'), tarOf(entries));
    const result = await unpackUntrusted(join(around, 'archive.tar'), folder, options);
    return { around, folder, result, skippedPaths: result.skipped.map((entry) => entry.path).sort() };
  }

  it('drops setuid, setgid and sticky bits and the owner, keeps the permission bits', async () => {
    const { folder, result } = await unpack([
      { path: 'tool', mode: 0o4755, uid: 1234, gid: 1234, body: 'run me' },
      { path: 'group', mode: 0o2755, body: 'g' },
      { path: 'shared', type: 'Directory', mode: 0o3777 },
      { path: 'private', mode: 0o600, body: 'p' },
    ]);
    assert.deepEqual(result, { skipped: [], failed: [] });
    const tool = await stat(join(folder, 'tool'));
    assert.equal(tool.mode & 0o7777, 0o755 & ~umask);
    assert.equal(tool.uid, process.getuid?.());
    assert.equal(tool.gid, process.getgid?.());
    assert.equal((await stat(join(folder, 'group'))).mode & 0o7000, 0);
    assert.equal((await stat(join(folder, 'shared'))).mode & 0o7000, 0);
    assert.equal((await stat(join(folder, 'private'))).mode & 0o777, 0o600);
    assert.equal(await readFile(join(folder, 'tool'), 'utf8'), 'run me');
  });

  it('creates no device node or FIFO, and says so', async () => {
    const { folder, result } = await unpack([
      { path: 'disk', type: 'BlockDevice', mode: 0o666, devmaj: 8, devmin: 0 },
      { path: 'mem', type: 'CharacterDevice', mode: 0o666, devmaj: 1, devmin: 1 },
      { path: 'pipe', type: 'FIFO', mode: 0o666 },
      { path: 'plain', body: 'ok' },
    ]);
    assert.deepEqual(
      result.skipped.map(({ path, reason }) => `${path}: ${reason}`),
      [
        'disk: a block device: not created',
        'mem: a character device: not created',
        'pipe: a FIFO: not created',
      ],
    );
    for (const name of ['disk', 'mem', 'pipe']) assert.equal(existsSync(join(folder, name)), false, name);
    assert.equal(await readFile(join(folder, 'plain'), 'utf8'), 'ok');
  });

  it('writes nothing for names with .. or absolute names', async () => {
    const marker = `vmkit-untrusted-abs-${process.pid}`;
    const { around, folder, skippedPaths } = await unpack([
      { path: '../evil', body: 'x' },
      { path: 'sub/../../evil2', body: 'x' },
      { path: `/tmp/${marker}`, body: 'x' },
      { path: 'fine', body: 'y' },
    ]);
    assert.deepEqual(skippedPaths, ['../evil', `/tmp/${marker}`, 'sub/../../evil2']);
    assert.equal(existsSync(join(around, 'evil')), false);
    assert.equal(existsSync(join(around, 'evil2')), false);
    assert.equal(existsSync(`/tmp/${marker}`), false);
    assert.equal(existsSync(join(folder, 'tmp', marker)), false, 'not rewritten as a relative name either');
    assert.equal(await readFile(join(folder, 'fine'), 'utf8'), 'y');
  });

  it('creates no symbolic link that leaves the folder, and writes nothing through a link', async () => {
    const outside = join(scratch, `outside${count}`);
    await mkdir(outside);
    const { folder, result, skippedPaths } = await unpack([
      { path: 'out', type: 'SymbolicLink', linkpath: outside },
      { path: 'out/planted', body: 'x' },
      { path: 'shadow', type: 'SymbolicLink', linkpath: '/etc/shadow' },
      { path: 'up', type: 'SymbolicLink', linkpath: '../..' },
      { path: 'sub/up', type: 'SymbolicLink', linkpath: '../../x' },
      { path: 'here', type: 'SymbolicLink', linkpath: '.' },
      { path: 'sub/back', type: 'SymbolicLink', linkpath: '../here/..' },
      { path: 'sub/fine', type: 'SymbolicLink', linkpath: '../tool' },
      { path: 'tool', body: 't' },
      { path: 'inside', type: 'SymbolicLink', linkpath: 'sub' },
      { path: 'inside/through', body: 'x' },
    ]);
    assert.deepEqual(skippedPaths, ['inside/through', 'out', 'shadow', 'sub/back', 'sub/up', 'up']);
    assert.deepEqual(
      result.skipped.find((entry) => entry.path === 'inside/through'),
      { path: 'inside/through', reason: 'a path through the symbolic link inside' },
    );
    assert.deepEqual(
      await import('node:fs/promises').then(({ readdir }) => readdir(outside)),
      [],
      'nothing written outside',
    );
    for (const name of ['shadow', 'up', 'sub/up', 'sub/back'])
      assert.equal(await isLink(join(folder, name)), false, name);
    assert.equal((await lstat(join(folder, 'out'))).isDirectory(), true, 'out/planted landed inside');
    assert.equal(await readlink(join(folder, 'sub/fine')), '../tool');
    assert.equal(await readFile(join(folder, 'sub/fine'), 'utf8'), 't');
    assert.equal(existsSync(join(folder, 'sub/through')), false);
  });

  it('writes nothing through a link that was already in the target folder', async () => {
    const outside = join(scratch, 'host-outside');
    await mkdir(outside);
    await writeFile(join(outside, 'passwd'), 'host');
    const around = join(scratch, 'prelinked');
    await mkdir(join(around, 'in'), { recursive: true });
    await symlink(outside, join(around, 'in', 'etc'));
    await writeFile(join(around, 'a.tar'), tarOf([{ path: 'etc/passwd', body: 'guest' }]));
    const result = await unpackUntrusted(join(around, 'a.tar'), join(around, 'in'));
    assert.deepEqual(
      result.skipped.map((entry) => entry.path),
      ['etc/passwd'],
    );
    assert.equal(await readFile(join(outside, 'passwd'), 'utf8'), 'host');
  });

  it('makes hard links only to names inside the folder', async () => {
    const { folder, result, skippedPaths } = await unpack([
      { path: 'file', body: 'data' },
      { path: 'out', type: 'Link', linkpath: '../../etc/passwd' },
      { path: 'abs', type: 'Link', linkpath: '/etc/passwd' },
      { path: 'same', type: 'Link', linkpath: 'file' },
    ]);
    assert.deepEqual(skippedPaths, ['abs', 'out']);
    assert.deepEqual(result.failed, []);
    assert.equal((await stat(join(folder, 'same'))).ino, (await stat(join(folder, 'file'))).ino);
    assert.equal(existsSync(join(folder, 'out')) || existsSync(join(folder, 'abs')), false);
  });

  it('reports entries it could not write as failed, not skipped', async () => {
    const { result } = await unpack([{ path: 'dangling', type: 'Link', linkpath: 'missing' }]);
    assert.deepEqual(result.skipped, []);
    assert.equal(result.failed.length, 1);
    assert.equal(result.failed[0]?.path, 'dangling');
    assert.match(result.failed[0]?.reason ?? '', /ENOENT/);
  });

  it('rejects a damaged archive', async () => {
    const around = join(scratch, 'damaged');
    await mkdir(join(around, 'in'), { recursive: true });
    const bytes = tarOf([{ path: 'file', body: 'x'.repeat(2000) }]).subarray(0, 1024);
    await writeFile(join(around, 'a.tar'), bytes);
    await assert.rejects(unpackUntrusted(join(around, 'a.tar'), join(around, 'in')));
  });

  it('with keepOwnership keeps owners and setuid/setgid bits, still no device node or link out', {
    skip: needsRoot,
  }, async () => {
    const { folder, skippedPaths } = await unpack(
      [
        { path: 'tool', mode: 0o4755, uid: 1234, gid: 1234, body: 'run me' },
        { path: 'rootsuid', mode: 0o4755, body: 'root' },
        { path: 'group', type: 'Directory', mode: 0o2775, uid: 1234, gid: 1235 },
        { path: 'mem', type: 'CharacterDevice', mode: 0o666, devmaj: 1, devmin: 1 },
        { path: 'shadow', type: 'SymbolicLink', linkpath: '/etc/shadow' },
        { path: '../evil', body: 'x' },
      ],
      { keepOwnership: true },
    );
    assert.deepEqual(skippedPaths, ['../evil', 'mem', 'shadow']);
    const tool = await stat(join(folder, 'tool'));
    assert.deepEqual([tool.uid, tool.gid, tool.mode & 0o7777], [1234, 1234, 0o4755]);
    assert.equal((await stat(join(folder, 'rootsuid'))).mode & 0o7777, 0o4755);
    const group = await stat(join(folder, 'group'));
    assert.deepEqual([group.uid, group.gid, group.mode & 0o7777], [1234, 1235, 0o2775]);
  });

  it('with keepOwnership a mode is set again only on what its own entry wrote', {
    skip: needsRoot,
  }, async () => {
    const around = join(scratch, 'relinked');
    await mkdir(join(around, 'in'), { recursive: true });
    await writeFile(join(around, 'in', 'victim'), 'host file');
    await writeFile(
      join(around, 'a.tar'),
      tarOf([
        { path: 'x', mode: 0o4755, uid: 1234, gid: 1234, body: 'guest' },
        { path: 'x', type: 'Link', linkpath: 'victim' },
      ]),
    );
    await unpackUntrusted(join(around, 'a.tar'), join(around, 'in'), { keepOwnership: true });
    assert.equal((await stat(join(around, 'in', 'victim'))).mode & 0o7000, 0);
  });

  it('a real tar of a folder with mknod, mkfifo, chown, setuid and links (as root)', {
    skip: needsRoot,
  }, async () => {
    const source = join(scratch, 'real');
    await mkdir(join(source, 'sub'), { recursive: true });
    await writeFile(join(source, 'tool'), 'tool');
    await writeFile(join(source, 'sub', 'owned'), 'mine');
    execFileSync('sh', [
      '-c',
      'cd "$1" && chmod 4755 tool && chmod 2775 sub && chown 1234:1234 sub/owned && mknod mem c 1 3 && mkfifo fifo && ln -s /etc/shadow shadow && ln -s tool alias && ln tool hard',
      'sh',
      source,
    ]);
    const archive = join(scratch, 'real.tar');
    execFileSync('tar', ['-C', source, '-cf', archive, '.']);
    for (const keepOwnership of [false, true]) {
      const folder = join(scratch, `real-out-${keepOwnership}`);
      await mkdir(folder);
      const result = await unpackUntrusted(archive, folder, { keepOwnership });
      assert.deepEqual(result.skipped.map((entry) => entry.path).sort(), ['fifo', 'mem', 'shadow']);
      assert.deepEqual(result.failed, []);
      const tool = await stat(join(folder, 'tool'));
      assert.equal(tool.mode & 0o7777, keepOwnership ? 0o4755 : 0o755);
      assert.equal((await stat(join(folder, 'sub'))).mode & 0o7000, keepOwnership ? 0o2000 : 0);
      assert.equal((await stat(join(folder, 'sub', 'owned'))).uid, keepOwnership ? 1234 : 0);
      assert.equal(await readlink(join(folder, 'alias')), 'tool');
      assert.equal((await stat(join(folder, 'hard'))).ino, tool.ino);
    }
  });
});

describe('copyFromVm options', () => {
  it('checks keepOwnership like every argument', () => {
    assert.throws(
      () => checkCall('copyFromVm', { copyOptions: { keepOwnership: 'yes' } }),
      /copyFromVm: options: keepOwnership: must be true or false/,
    );
    assert.throws(() => checkCall('copyFromVm', { copyOptions: { keepOwners: true } }), /unknown option/);
    assert.deepEqual(checkCall('copyFromVm', { copyOptions: { keepOwnership: true, timeoutMs: 5 } }), {
      keepOwnership: true,
      timeoutMs: 5,
    });
  });

  it('refuses keepOwnership without root before touching the guest', async () => {
    const getuid = process.getuid;
    process.getuid = () => 1000;
    try {
      const internals = { name: 'm' } as MachineInternals;
      const untouched = () => Promise.reject(new Error('the guest was asked'));
      await assert.rejects(
        copyOut(internals, untouched, '/out', join(tmpdir(), 'never'), {
          timeoutMs: 1000,
          keepOwnership: true,
        }),
        (error: Error) => error instanceof ConfigError && /keepOwnership needs root/.test(error.message),
      );
    } finally {
      process.getuid = getuid;
    }
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import type { ConfigIdentity } from '../../src/machine/config.js';
import { Runtime } from '../../src/runtime/runtime.js';
import {
  hashOf,
  SNAPSHOT_FORMAT,
  type SnapshotManifest,
  type SnapshotRecord,
  snapshotId,
  validateSnapshotName,
} from '../../src/snapshot/manifest.js';
import { restorability, verifyFiles } from '../../src/snapshot/verify.js';
import { sparseDigest } from '../../src/util/sparse.js';

const OLD_VERSION = 'QEMU emulator version 0.0.1';

const identity: ConfigIdentity = {
  backend: 'qemu',
  imageKey: 'k'.repeat(64),
  memoryMiB: 256,
  cpus: 1,
  accel: 'tcg',
  nics: 2,
  disks: [64],
  qemuArgs: [],
  hostNic: null,
  vmmVersion: OLD_VERSION,
};

describe('snapshotId', () => {
  test('is <name>-<12 hex>', () => {
    assert.match(snapshotId('web', identity), /^web-[0-9a-f]{12}$/);
    assert.match(snapshotId('a.b_c-1', identity, { v: 1 }), /^a\.b_c-1-[0-9a-f]{12}$/);
  });

  test('golden: the first 12 hex digits of SHA-256 over the JSON of the identity (and key)', () => {
    assert.equal(snapshotId('web', identity), 'web-9e663cb5eefd');
    assert.equal(snapshotId('web', identity, 'setup-v1'), 'web-a4adb08e1b4c');
    const sha = (value: unknown) => createHash('sha256').update(JSON.stringify(value)).digest('hex');
    assert.equal(hashOf(identity), sha(identity));
    assert.equal(snapshotId('web', identity), `web-${sha(identity).slice(0, 12)}`);
  });

  test('is deterministic, also for an equal identity built anew', () => {
    assert.equal(snapshotId('web', identity), snapshotId('web', structuredClone(identity)));
    assert.equal(snapshotId('web', identity, { a: [1] }), snapshotId('web', identity, { a: [1] }));
  });

  test('differs when any field of the identity changes', () => {
    const base = snapshotId('web', identity);
    const changes: Partial<ConfigIdentity>[] = [
      { backend: 'firecracker' },
      { imageKey: 'j'.repeat(64) },
      { memoryMiB: 512 },
      { cpus: 2 },
      { accel: 'kvm' },
      { nics: 1 },
      { disks: [65] },
      { disks: [] },
      { qemuArgs: ['-S'] },
      { vmmVersion: 'QEMU emulator version 0.0.2' },
    ];
    const ids = changes.map((change) => snapshotId('web', { ...identity, ...change }));
    for (const [index, id] of ids.entries()) {
      assert.notEqual(id, base, `changing ${JSON.stringify(changes[index])} must change the id`);
      assert.match(id, /^web-[0-9a-f]{12}$/);
    }
    assert.equal(new Set(ids).size, ids.length, 'every change gives a different id');
  });

  test('differs when the key changes, and a key differs from no key', () => {
    const ids = [
      snapshotId('web', identity),
      snapshotId('web', identity, 'a'),
      snapshotId('web', identity, 'b'),
      snapshotId('web', identity, { a: 1 }),
      snapshotId('web', identity, null),
    ];
    assert.equal(new Set(ids).size, ids.length);
  });

  test('the name is only the prefix: equal hashes for different names', () => {
    assert.equal(snapshotId('a', identity).slice(2), snapshotId('b', identity).slice(2));
  });

  test('refuses an invalid name with a ConfigError', () => {
    assert.throws(() => snapshotId('Web', identity), ConfigError);
  });
});

describe('validateSnapshotName', () => {
  for (const name of ['a', '0', 'web', 'a.b', 'a_b-c', 'setup.v2', 'x'.repeat(64), '9..-_']) {
    test(`accepts ${JSON.stringify(name)}`, () => {
      assert.equal(validateSnapshotName(name), name);
    });
  }

  for (const name of [
    'Web',
    'WEB',
    '.hidden',
    '-dash',
    '_under',
    'x'.repeat(65),
    'a/b',
    '../etc',
    '',
    'a b',
    'é',
    'a\nb',
  ]) {
    test(`refuses ${JSON.stringify(name)} with a ConfigError naming it`, () => {
      assert.throws(
        () => validateSnapshotName(name),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
          assert.equal(
            error.message,
            `invalid snapshot name ${JSON.stringify(name)}: use 1 to 64 of a-z 0-9 . _ -`,
          );
          return true;
        },
      );
    });
  }

  for (const value of [undefined, null, 42, ['a'], { name: 'a' }]) {
    test(`refuses the non-string ${JSON.stringify(value)}`, () => {
      assert.throws(() => validateSnapshotName(value), ConfigError);
    });
  }
});

describe('sparseDigest', () => {
  test('golden: an all-zero file digests to SHA-256 of its length alone', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-sparse-test-'));
    try {
      const path = join(dir, 'zero');
      await writeFile(path, Buffer.alloc(8192));
      const length = Buffer.alloc(8);
      length.writeBigUInt64BE(8192n);
      assert.deepEqual(await sparseDigest(path), {
        digest: createHash('sha256').update(length).digest('hex'),
        bytes: 8192,
        dataBytes: 0,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('restorability and verifyFiles', () => {
  let root: string;
  let runtime: Runtime;
  /** The first line of this host's QEMU --version, as vmkit reads it. */
  let hostVersion: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'vmkit-verify-test-'));
    runtime = new Runtime({ root });
    const binary = process.env.VMKIT_QEMU || 'qemu-system-x86_64';
    try {
      hostVersion = execFileSync(binary, ['--version'], { encoding: 'utf8' }).split('\n')[0]?.trim() ?? '';
    } catch {
      hostVersion = 'QEMU not installed';
    }
  });

  after(async () => {
    await runtime.close();
    await rm(root, { recursive: true, force: true });
  });

  /** State bytes: a non-zero block, a zero block, a partial non-zero block. */
  const stateBytes = () => {
    const bytes = Buffer.alloc(4096 * 2 + 1000);
    for (let i = 0; i < 4096; i++) bytes[i] = (i % 251) + 1;
    for (let i = 8192; i < bytes.length; i++) bytes[i] = (i % 7) + 1;
    return bytes;
  };

  /** A snapshot folder with a `state` file and a manifest recording it. */
  async function snapshotFolder(name: string, overrides: Partial<SnapshotManifest> = {}) {
    const dir = await mkdtemp(join(root, `${name}-`));
    const state = stateBytes();
    await writeFile(join(dir, 'state'), state);
    const { digest, bytes } = await sparseDigest(join(dir, 'state'));
    const manifest: SnapshotManifest = {
      format: SNAPSHOT_FORMAT,
      id: snapshotId('web', identity),
      name: 'web',
      createdAt: '2024-01-01T00:00:00.000Z',
      source: 'web',
      nics: [],
      identity,
      image: {
        name: 'tiny',
        key: identity.imageKey,
        dir: join(dir, 'no-image'),
        kernel: join(dir, 'no-image', 'vmlinuz'),
        initrd: join(dir, 'no-image', 'initrd.img'),
        cmdline: 'console=ttyS0',
        kernelRelease: '6.1.0',
        profile: 'tiny',
      },
      macs: ['52:54:00:00:00:01', '52:54:00:00:00:02'],
      ramInStream: true,
      files: { state: { digest, bytes } },
      ...overrides,
    };
    await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
    const record: SnapshotRecord = { manifest, dir };
    return { record, dir, state, path: join(dir, 'state') };
  }

  test('a manifest of another format: exactly one reason, naming the format', async () => {
    const { record } = await snapshotFolder('old', { format: 2 as unknown as typeof SNAPSHOT_FORMAT });
    assert.deepEqual(await restorability(record, runtime), ['made by another vmkit version (format 2)']);
    assert.equal(SNAPSHOT_FORMAT, 4, 'bump this test together with the snapshot format');
  });

  test('another QEMU version and a missing image: exactly those reasons (accel tcg)', async () => {
    const { record } = await snapshotFolder('stale');
    const { kernel, initrd } = record.manifest.image;
    assert.deepEqual(await restorability(record, runtime, 'tcg'), [
      `taken with "${OLD_VERSION}" but this is "${hostVersion}"`,
      `its image is gone (${kernel})`,
      `its image is gone (${initrd})`,
    ]);
  });

  test('with accel auto the reasons still include the version mismatch and the missing image', async () => {
    const { record } = await snapshotFolder('auto');
    const reasons = await restorability(record, runtime);
    assert.ok(
      reasons.includes(`taken with "${OLD_VERSION}" but this is "${hostVersion}"`),
      JSON.stringify(reasons),
    );
    assert.ok(
      reasons.some((reason) => reason.startsWith('its image is gone (')),
      JSON.stringify(reasons),
    );
    assert.equal(
      reasons.some((reason) => /damaged|tampered/.test(reason)),
      false,
      'the files are intact',
    );
  });

  test('an unknown backend is a reason, not a throw', async () => {
    const { record } = await snapshotFolder('other-vmm', {
      identity: { ...identity, backend: 'firecracker' },
    });
    const reasons = await restorability(record, runtime, 'tcg');
    assert.equal(reasons[0], 'unknown backend "firecracker" (known: qemu, mock)');
    assert.equal(reasons.length, 3, JSON.stringify(reasons));
  });

  test('a snapshot with the old outbound access (slirp on the host NIC) is refused with that reason', async () => {
    const hostNic = { mac: '52:54:00:00:00:01', internet: true, services: [] };
    const { record } = await snapshotFolder('slirp-nic', { identity: { ...identity, hostNic } });
    const reasons = await restorability(record, runtime, 'tcg');
    assert.ok(
      reasons.includes('taken with outbound access on the host NIC, before outbound had a NIC of its own'),
      JSON.stringify(reasons),
    );
    const { record: now } = await snapshotFolder('own-nic', {
      identity: { ...identity, hostNic: { ...hostNic, outboundMac: '52:54:00:00:00:02' } },
    });
    const nowReasons = await restorability(now, runtime, 'tcg');
    assert.ok(!nowReasons.some((reason) => /outbound/.test(reason)), JSON.stringify(nowReasons));
  });

  test('a damaged file is among the reasons', async () => {
    const { record, path } = await snapshotFolder('damaged');
    await truncate(path, 10);
    const reasons = await restorability(record, runtime, 'tcg');
    assert.equal(reasons.at(-1), `damaged: state has 10 bytes, not ${stateBytes().length}`);
  });

  test('verifyFiles: intact, then tampered with (same size), then truncated, then missing', async () => {
    const { record, dir, state, path } = await snapshotFolder('files');
    assert.equal(await verifyFiles(record), undefined);
    const verified = JSON.parse(await readFile(join(dir, 'verified.json'), 'utf8')) as Record<string, string>;
    assert.deepEqual(Object.keys(verified), ['state'], 'a full check records the fingerprints');
    assert.equal(await verifyFiles(record), undefined, 'and a second check still passes');

    const file = await open(path, 'r+');
    await file.write(Buffer.from([(state[100] ?? 0) ^ 0x5a]), 0, 1, 100);
    await file.close();
    assert.equal((await readFile(path)).length, state.length, 'the size is unchanged');
    assert.match((await verifyFiles(record)) ?? '', /tampered with: state/);
    assert.equal(await verifyFiles(record), 'tampered with: state does not match its checksum');

    await truncate(path, 4096);
    assert.match((await verifyFiles(record)) ?? '', /damaged: state has/);
    assert.equal(await verifyFiles(record), `damaged: state has 4096 bytes, not ${state.length}`);

    await rm(path);
    assert.equal(await verifyFiles(record), 'damaged: state has gone missing');
  });

  test('verifyFiles: a change in a zero block is tampering too', async () => {
    const { record, path } = await snapshotFolder('zero-block');
    assert.equal(await verifyFiles(record), undefined);
    const file = await open(path, 'r+');
    await file.write(Buffer.from([1]), 0, 1, 4096 + 17);
    await file.close();
    assert.equal(await verifyFiles(record), 'tampered with: state does not match its checksum');
  });

  test('verifyFiles: restoring the original bytes makes it pass again', async () => {
    const { record, path, state } = await snapshotFolder('restored');
    await writeFile(path, Buffer.alloc(state.length, 9));
    assert.match((await verifyFiles(record)) ?? '', /tampered with: state/);
    await writeFile(path, state);
    assert.equal(await verifyFiles(record), undefined);
  });
});

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Backend, VmmSpec } from '../../src/backends/backend.js';
import { mockBackend } from '../../src/backends/mock/backend.js';
import { qemuArgs } from '../../src/backends/qemu/args.js';
import { ConfigError } from '../../src/errors.js';
import { startMachine } from '../../src/index.js';
import { configIdentity, type MachineConfig } from '../../src/machine/config.js';
import { resolveExtraDisks } from '../../src/machine/extra-disks.js';
import { parseMachineOptions } from '../../src/machine/options.js';
import { Runtime } from '../../src/runtime/runtime.js';
import { SNAPSHOT_FORMAT, type SnapshotManifest, snapshotId } from '../../src/snapshot/manifest.js';
import { snapshotConfig } from '../../src/snapshot/restore.js';

type Spec = Omit<VmmSpec, 'runtime' | 'startTimeoutMs'>;

const base: Spec = {
  name: 'vmkit-builder',
  stateDir: '/run/vm/b',
  kernel: '/img/vmlinuz',
  initrd: '/img/initrd.img',
  cmdline: 'console=ttyS0',
  memoryMiB: 512,
  cpus: 1,
  accel: 'tcg',
  nics: [],
  memory: { path: '/dev/shm/b.ram', share: true },
  disks: ['/run/vm/b/disk0.qcow2'],
};

/** What the VM builder gives: its target overlay and its read-only transfer disk. */
const builderDisks: NonNullable<Spec['extraDisks']> = [
  { path: '/w/target.qcow2', format: 'qcow2', serial: 'vmkit-target' },
  { path: '/w/transfer.raw', format: 'raw', readOnly: true, serial: 'vmkit-transfer' },
];

describe('extraDisks in qemuArgs', () => {
  test('golden: the arguments the VM builder passed as qemuArgs before, right after the disks', () => {
    assert.deepEqual(qemuArgs({ ...base, extraDisks: builderDisks }), [
      ...qemuArgs(base),
      '-drive',
      'file=/w/target.qcow2,format=qcow2,if=none,id=vmkit-target',
      '-device',
      'virtio-blk-pci,drive=vmkit-target,serial=vmkit-target,addr=0x18',
      '-drive',
      'file=/w/transfer.raw,format=raw,if=none,id=vmkit-transfer,readonly=on',
      '-device',
      'virtio-blk-pci,drive=vmkit-transfer,serial=vmkit-transfer,addr=0x19',
    ]);
  });

  test('they follow the machine own disks and come before -incoming and extraArgs', () => {
    const args = qemuArgs({ ...base, extraDisks: builderDisks, incoming: true, extraArgs: ['-S'] });
    const root = args.indexOf('file=/run/vm/b/disk0.qcow2,if=virtio,format=qcow2,id=disk0');
    const first = args.indexOf('file=/w/target.qcow2,format=qcow2,if=none,id=vmkit-target');
    assert.ok(root >= 0 && first > root, 'after the root disk');
    assert.ok(first < args.indexOf('-incoming'), 'before -incoming');
    assert.deepEqual(args.slice(-1), ['-S']);
  });

  test('no extraDisks, or an empty list, add nothing', () => {
    assert.deepEqual(qemuArgs({ ...base, extraDisks: [] }), qemuArgs(base));
  });

  test('a comma in a path is doubled', () => {
    const args = qemuArgs({ ...base, extraDisks: [{ path: '/a,b/d.raw', format: 'raw', serial: 'd' }] });
    assert.ok(args.includes('file=/a,,b/d.raw,format=raw,if=none,id=d'), args.join(' '));
  });

  test('eight disks take slots 0x18 to 0x1f; a ninth is refused', () => {
    const disks = Array.from({ length: 8 }, (_, i) => ({
      path: `/d/${i}.raw`,
      format: 'raw' as const,
      serial: `d${i}`,
    }));
    const devices = qemuArgs({ ...base, extraDisks: disks }).filter((arg) => arg.includes(',serial='));
    assert.deepEqual(
      devices.map((device) => device.split('addr=')[1]),
      ['0x18', '0x19', '0x1a', '0x1b', '0x1c', '0x1d', '0x1e', '0x1f'],
    );
    const ninth = [...disks, { path: '/d/8.raw', format: 'raw' as const, serial: 'd8' }];
    assert.throws(() => qemuArgs({ ...base, extraDisks: ninth }), ConfigError);
  });

  test("a serial that is one of the machine's own drive ids gets a drive id of its own", () => {
    const args = qemuArgs({
      ...base,
      extraDisks: [
        { path: '/d/a.raw', format: 'raw', serial: 'disk0' },
        { path: '/d/b.raw', format: 'raw', serial: 'cdrom' },
      ],
    });
    assert.ok(args.includes('file=/d/a.raw,format=raw,if=none,id=extra.0'));
    assert.ok(args.includes('virtio-blk-pci,drive=extra.0,serial=disk0,addr=0x18'));
    assert.ok(args.includes('virtio-blk-pci,drive=extra.1,serial=cdrom,addr=0x19'));
    assert.equal(args.filter((arg) => arg.endsWith(',id=disk0')).length, 1, 'the root disk keeps its id');
  });
});

describe('extraDisks options', () => {
  const parse = (extraDisks: unknown) => parseMachineOptions({ name: 'm', extraDisks });
  const refused = (extraDisks: unknown, message: RegExp) =>
    assert.throws(
      () => parse(extraDisks),
      (error: Error) => error instanceof ConfigError && message.test(error.message),
    );

  test('accepts what the VM builder gives', () => {
    assert.deepEqual(parse(builderDisks).extraDisks, builderDisks);
  });

  test('refuses bad input, naming the field', () => {
    refused([{ path: '/x', format: 'vmdk', serial: 's' }], /extraDisks\[0\]\.format: must be raw or qcow2/);
    refused([{ path: '', format: 'raw', serial: 's' }], /extraDisks\[0\]\.path: must not be empty/);
    refused([{ format: 'raw', serial: 's' }], /extraDisks\[0\]\.path: must be a file path/);
    refused([{ path: '/x', format: 'raw', serial: '1st' }], /extraDisks\[0\]\.serial: must be a letter/);
    refused([{ path: '/x', format: 'raw', serial: 'a,b' }], /extraDisks\[0\]\.serial/);
    refused([{ path: '/x', format: 'raw', serial: 'x'.repeat(21) }], /extraDisks\[0\]\.serial/);
    refused([{ path: '/x', format: 'raw', serial: 's', readOnly: 'yes' }], /readOnly: must be true or false/);
    refused([{ path: '/x', format: 'raw', serial: 's', slot: 3 }], /unknown option "slot"/);
    refused(
      [
        { path: '/x', format: 'raw', serial: 's' },
        { path: '/y', format: 'raw', serial: 's' },
      ],
      /extraDisks: each extra disk needs a serial of its own/,
    );
    refused(
      Array.from({ length: 9 }, (_, i) => ({ path: `/${i}`, format: 'raw', serial: `s${i}` })),
      /at most 8 extra disks/,
    );
  });
});

describe('resolveExtraDisks', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmkit-extra-disks-'));
    await writeFile(join(dir, 'a.raw'), '');
    await mkdir(join(dir, 'folder'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('makes paths absolute', async () => {
    const path = relative(process.cwd(), join(dir, 'a.raw'));
    const [disk] = await resolveExtraDisks([{ path, format: 'raw', serial: 'a' }]);
    assert.equal(disk?.path, join(dir, 'a.raw'));
  });

  test('refuses a missing file, a folder, and a file attached twice', async () => {
    await assert.rejects(
      resolveExtraDisks([{ path: join(dir, 'none'), format: 'raw', serial: 'a' }]),
      /extraDisks\[0\]\.path: cannot use .*none: ENOENT/,
    );
    await assert.rejects(
      resolveExtraDisks([{ path: join(dir, 'folder'), format: 'raw', serial: 'a' }]),
      /extraDisks\[0\]\.path: .*folder is not a regular file/,
    );
    await assert.rejects(
      resolveExtraDisks([
        { path: join(dir, 'a.raw'), format: 'raw', serial: 'a' },
        { path: `${dir}/./a.raw`, format: 'raw', readOnly: true, serial: 'b' },
      ]),
      (error: Error) =>
        error instanceof ConfigError && /extraDisks\[1\].*already attached/.test(error.message),
    );
  });

  test('startMachine hands the VMM the checked disks', async () => {
    const seen: VmmSpec[] = [];
    const mock = mockBackend();
    const backend: Backend = {
      ...mock,
      launch: (spec) => {
        seen.push(spec);
        return mock.launch(spec);
      },
    };
    await using runtime = new Runtime();
    const path = relative(process.cwd(), join(dir, 'a.raw'));
    const machine = await startMachine({
      name: 'extra',
      backend,
      runtime,
      extraDisks: [{ path, format: 'raw', readOnly: true, serial: 'data' }],
    });
    await machine.close();
    assert.deepEqual(seen[0]?.extraDisks, [
      { path: join(dir, 'a.raw'), format: 'raw', readOnly: true, serial: 'data' },
    ]);
    await assert.rejects(
      startMachine({
        name: 'bad',
        backend,
        runtime,
        extraDisks: [{ path: '/nope', format: 'raw', serial: 'x' }],
      }),
      ConfigError,
    );
    assert.equal(seen.length, 1, 'no VMM for a disk that is not there');
  });
});

describe('extraDisks in snapshots', () => {
  const config: MachineConfig = {
    backend: 'qemu',
    image: {
      name: 'debian',
      key: 'k'.repeat(64),
      dir: '/img',
      kernel: '/k',
      initrd: '/i',
      cmdline: 'c',
      kernelRelease: '6',
      profile: 'debian',
    },
    memoryMiB: 512,
    cpus: 1,
    accel: 'tcg',
    nics: 0,
    macs: [],
    disks: [{ sizeMiB: 0, base: '/img/root.qcow2' }],
    qemuArgs: [],
  };
  const manifest = (identity: ReturnType<typeof configIdentity>): SnapshotManifest => ({
    format: SNAPSHOT_FORMAT,
    id: 's',
    name: 's',
    createdAt: '',
    source: 'b',
    identity,
    image: config.image,
    macs: [],
    nics: [],
    ramInStream: false,
    files: {},
  });

  test('a machine without extra disks has the identity (and snapshot ids) it had before', () => {
    const identity = configIdentity(config, 'v1');
    assert.equal('extraDisks' in identity, false);
    assert.equal('extraDisks' in configIdentity({ ...config, extraDisks: [] }, 'v1'), false);
    assert.equal('extraDisks' in snapshotConfig(manifest(identity), false), false);
  });

  test('a restore attaches the same disks; they are part of the identity', () => {
    const identity = configIdentity({ ...config, extraDisks: builderDisks }, 'v1');
    assert.deepEqual(identity.extraDisks, builderDisks);
    assert.notEqual(snapshotId('b', identity), snapshotId('b', configIdentity(config, 'v1')));
    const restored = snapshotConfig(manifest(JSON.parse(JSON.stringify(identity))), false);
    assert.deepEqual(restored.extraDisks, builderDisks);
    assert.deepEqual(
      qemuArgs({ ...base, extraDisks: restored.extraDisks }),
      qemuArgs({ ...base, extraDisks: builderDisks }),
    );
  });
});

// Disk files attached as they are (extraDisks): found by serial after the machine's own disks,
// read-only when asked, and attached again to a restored clone; and disks attached to a running
// machine (attachDisk).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  ConfigError,
  type ExtraDisk,
  type Machine,
  restoreMachine,
  type Snapshot,
  SnapshotError,
  startMachine,
} from '../../src/index.js';
import { lacks } from '../helpers.js';

const MARKER = 'vmkit-extra-disk-marker';

/** The block device whose serial is `serial`, by its name (vda, vdb, ...). */
const withSerial = (serial: string) =>
  `for b in /sys/block/vd*; do [ "$(cat $b/serial 2>/dev/null)" = ${serial} ] && basename $b; done; true`;

/** What a machine sees of its disks: names, the extra disk's contents and whether it is read-only. */
async function disksSeen(machine: Machine) {
  const name = (await machine.succeed(withSerial('marker'))).trim();
  return {
    own: (await machine.succeed('cat /sys/block/vda/size')).trim(),
    extra: name,
    contents: await machine.succeed(`head -c ${MARKER.length} /dev/${name || 'none'}`),
    readOnly: (await machine.succeed(`cat /sys/block/${name || 'none'}/ro`)).trim(),
  };
}

describe('extraDisks on a real VMM', { skip: lacks('snapshot') }, () => {
  let dir: string;
  let machine: Machine;
  let snapshot: Snapshot | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmkit-extra-disks-'));
    const file = join(dir, 'marker.raw');
    await writeFile(file, Buffer.concat([Buffer.from(MARKER), Buffer.alloc(1024 * 1024)]));
    machine = await startMachine({
      name: 'extra',
      disks: [{ sizeMiB: 8 }],
      extraDisks: [{ path: file, format: 'raw', readOnly: true, serial: 'marker' }],
    });
  });

  after(async () => {
    await machine?.close();
    if (snapshot) await rm(snapshot.dir, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  });

  it('the own disk stays /dev/vda; the extra disk is found by its serial, read-only', async () => {
    assert.deepEqual(await disksSeen(machine), {
      own: String((8 * 1024 * 1024) / 512),
      extra: 'vdb',
      contents: MARKER,
      readOnly: '1',
    });
    assert.notEqual((await machine.execute('echo x | dd of=/dev/vdb 2>/dev/null && sync')).exitCode, 0);
  });

  it('a restored clone has the same disks', async () => {
    snapshot = await machine.snapshot();
    await using clone = await restoreMachine(snapshot, { name: 'extra-clone' });
    assert.deepEqual(await disksSeen(clone), await disksSeen(machine));
  });
});

describe('attachDisk: a disk attached to a running machine', { skip: lacks('diskHotplug') }, () => {
  let dir: string;
  let machine: Machine;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmkit-attach-disk-'));
    machine = await startMachine({ name: 'attach' });
  });

  after(async () => {
    await machine?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('shows in the guest by its serial and takes writes that reach the file', async () => {
    const file = join(dir, 'late.raw');
    await writeFile(file, Buffer.alloc(1024 * 1024));
    const device = await machine.attachDisk({ path: file, format: 'raw', serial: 'late' });
    assert.match(device, /^\/dev\/vd[a-z]$/); // tiny has no disk of its own: it may be the first
    assert.equal((await machine.succeed(withSerial('late'))).trim(), device.slice('/dev/'.length));
    await machine.succeed(`printf ${MARKER} | dd of=${device} conv=fsync 2>/dev/null`);
    assert.equal((await readFile(file)).subarray(0, MARKER.length).toString(), MARKER);
  });

  it('refuses a serial or a file twice, a missing file and a bad serial, with the argument named', async () => {
    const file = join(dir, 'late.raw');
    const other = join(dir, 'other.raw');
    await writeFile(other, Buffer.alloc(64 * 1024));
    for (const [disk, said] of [
      [{ path: other, format: 'raw', serial: 'late' }, /serial late already/],
      [{ path: file, format: 'raw', serial: 'again' }, /already attached/],
      [{ path: join(dir, 'none.raw'), format: 'raw', serial: 'none' }, /ENOENT/],
      [{ path: other, format: 'raw', serial: 'bad serial!' }, /attachDisk: disk: serial/],
      [{ path: other, format: 'vmdk', serial: 'fmt' }, /format: must be raw or qcow2/],
    ] as const) {
      await assert.rejects(machine.attachDisk(disk as ExtraDisk), (error: Error) => {
        assert.ok(error instanceof ConfigError, `${error}`);
        assert.match(error.message, said);
        return true;
      });
    }
  });

  it('two disks attached at once both show, each its own device', async () => {
    const files = ['a', 'b'].map((serial) => join(dir, `${serial}.raw`));
    for (const file of files) await writeFile(file, Buffer.alloc(64 * 1024));
    const devices = await Promise.all(
      ['a', 'b'].map((serial, index) =>
        machine.attachDisk({ path: files[index] as string, format: 'raw', serial }),
      ),
    );
    assert.equal(new Set(devices).size, 2, devices.join(' '));
    for (const [index, serial] of ['a', 'b'].entries())
      assert.equal(`/dev/${(await machine.succeed(withSerial(serial))).trim()}`, devices[index]);
  });

  it('cannot be snapshotted: a restore would not make the disk', async () => {
    await assert.rejects(machine.snapshot(), (error: Error) => {
      assert.ok(error instanceof SnapshotError, `${error}`);
      assert.match(error.message, /disks were attached while it ran \(late, (a, b|b, a)\)/);
      return true;
    });
  });
});

// Disk files attached as they are (extraDisks): found by serial after the machine's own disks,
// read-only when asked, and attached again to a restored clone.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Machine, restoreMachine, type Snapshot, startMachine } from '../../src/index.js';
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

// What a restored clone is told by the guest agent itself (its identity request): the host's
// clock, its own hostname, and entropy of its own, so that clones of one state draw different bytes.
import assert from 'node:assert/strict';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type Machine,
  openSnapshot,
  restoreMachine,
  type Snapshot,
  type SnapshotManifest,
  startMachine,
} from '../../src/index.js';
import { sparseDigest } from '../../src/util/sparse.js';
import { lacks } from '../helpers.js';

describe('the identity of a restored clone', { skip: lacks('snapshot') || lacks('cowFork') }, () => {
  let template: Machine;
  let snapshot: Snapshot;

  before(async () => {
    template = await startMachine({ name: 'identity-template' });
    // A clock years off: a clone shows the host's only if the restore set it.
    await template.succeed('date -s @1000000000 >/dev/null');
    snapshot = await template.snapshot();
  });

  after(async () => {
    await template?.close();
    if (snapshot) await rm(snapshot.dir, { recursive: true, force: true });
    if (snapshot) await rm(`${snapshot.dir}-cut`, { recursive: true, force: true });
  });

  it('has the host clock, its own hostname, and randomness of its own', async () => {
    await using first = await restoreMachine(snapshot, { name: 'identity-a' });
    await using second = await restoreMachine(snapshot, { name: 'identity-b' });
    for (const clone of [first, second]) {
      const guestSeconds = Number(await clone.succeed('date +%s'));
      const off = guestSeconds - Date.now() / 1000;
      assert.ok(Math.abs(off) < 2, `${clone.name}: guest clock ${guestSeconds}, ${off} s off the host's`);
      assert.equal(await clone.succeed('hostname'), `${clone.name}\n`);
    }
    const draw = (clone: Machine) => clone.succeed('head -c 16 /dev/urandom | od -An -tx1');
    const [a, b] = [await draw(first), await draw(second)];
    assert.notEqual(a, b, 'two clones of one state drew the same bytes from /dev/urandom');
  });

  it('a state QEMU cannot load fails naming the file, with what QEMU said', async () => {
    // Cut short, and recorded so: it passes vmkit's checks, and only QEMU finds it incomplete.
    const copy = `${snapshot.dir}-cut`;
    await cp(snapshot.dir, copy, { recursive: true });
    const state = join(copy, 'state');
    await writeFile(state, (await readFile(state)).subarray(0, 4096));
    await rm(join(copy, 'verified.json'), { force: true });
    const manifest = JSON.parse(await readFile(join(copy, 'manifest.json'), 'utf8')) as SnapshotManifest;
    manifest.id = `${manifest.id}-cut`;
    manifest.files.state = { digest: (await sparseDigest(state)).digest, bytes: 4096 };
    await writeFile(join(copy, 'manifest.json'), JSON.stringify(manifest));
    const cut = await openSnapshot(manifest.id);
    await assert.rejects(restoreMachine(cut, { name: 'cut' }), (error: Error) => {
      assert.ok(error.message.includes(state), error.message);
      assert.match(error.message, /load of migration failed|QEMU said/);
      return true;
    });
  });
});

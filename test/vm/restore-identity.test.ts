// What a restored clone is told by the guest agent itself (its identity request): the host's
// clock, its own hostname, and entropy of its own, so that clones of one state draw different bytes.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { type Machine, restoreMachine, type Snapshot, startMachine } from '../../src/index.js';
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
});

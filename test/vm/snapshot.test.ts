// Snapshots, restores and forks of real guests.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  ConfigError,
  type Machine,
  openSnapshot,
  pruneSnapshots,
  restoreMachine,
  type Snapshot,
  type SnapshotManifest,
  startMachine,
} from '../../src/index.js';
import { alive, lacks, runCli } from '../helpers.js';

describe('snapshots', { skip: lacks('snapshot') || lacks('cowFork') }, () => {
  let template: Machine;
  let snapshot: Snapshot;
  const extraDirs: string[] = [];

  before(async () => {
    // fresh: booted, so that its snapshot keeps RAM in a file (a start from the boot cache maps the
    // entry's RAM copy-on-write, and its snapshots carry RAM in the saved state: tested below).
    template = await startMachine({ name: 'template', fresh: true, disks: [{ sizeMiB: 32 }] });
    await template.succeed('mke2fs -q /dev/vda && mkdir -p /data && mount /dev/vda /data');
    await template.succeed('echo from-setup > /data/file && echo in-ram > /root/note && sync');
    // A process started before the snapshot, to be found running after every restore.
    await template.succeed('(while :; do sleep 1; done) >/dev/null 2>&1 & echo $! > /root/worker.pid');
    snapshot = await template.snapshot();
  });

  after(async () => {
    await template?.close();
    await rm(snapshot?.dir ?? '/nonexistent', { recursive: true, force: true });
    for (const dir of extraDirs) await rm(dir, { recursive: true, force: true });
  });

  it('lets the template run on after the snapshot', async () => {
    assert.equal(await template.succeed('cat /root/note'), 'in-ram\n');
    await template.succeed('echo changed-later > /root/note && echo changed-later > /data/file');
  });

  it('restores files in RAM and on disk, running processes, and the host clock', async () => {
    await using clone = await restoreMachine(snapshot, { name: 'restored' });
    assert.equal(await clone.succeed('cat /root/note /data/file'), 'in-ram\nfrom-setup\n');
    assert.equal(await clone.succeed('kill -0 "$(cat /root/worker.pid)" && echo running'), 'running\n');
    const guestNow = Number(await clone.succeed('date +%s'));
    assert.ok(Math.abs(guestNow - Date.now() / 1000) < 5, `guest clock ${guestNow} is close to the host's`);
    assert.equal(await clone.succeed('hostname'), 'restored\n');
  });

  it('can be restored many times; the backdoor, file copies and console work after a restore', async () => {
    for (let round = 0; round < 2; round++) {
      await using clone = await restoreMachine(snapshot, { name: `again${round}` });
      assert.equal(await clone.succeed('cat /root/note'), 'in-ram\n');
      const result = await clone.execute('echo out; echo err >&2; exit 5');
      assert.deepEqual(result, { exitCode: 5, stdout: 'out\n', stderr: 'err\n' });
      await clone.copyFromVm('/data/file', `${clone.stateDir}/copied`);
      assert.equal(await readFile(`${clone.stateDir}/copied`, 'utf8'), 'from-setup\n');
      clone.sendConsole(`echo console-round-${round}\n`);
      await clone.waitForConsoleText(new RegExp(`console-round-${round}`), { timeoutMs: 20_000 });
    }
  });

  it('forks clones that do not see each other’s writes, in RAM or on disk', async () => {
    const clones = await snapshot.fork(3);
    try {
      assert.deepEqual(
        clones.map((clone) => clone.name),
        ['template-1', 'template-2', 'template-3'],
      );
      await Promise.all(
        clones.map((clone, i) =>
          clone.succeed(`echo clone${i} > /root/note && echo clone${i} > /data/file && sync`),
        ),
      );
      const seen = await Promise.all(clones.map((clone) => clone.succeed('cat /root/note /data/file')));
      assert.deepEqual(seen, ['clone0\nclone0\n', 'clone1\nclone1\n', 'clone2\nclone2\n']);
      const pids = clones.map((clone) => clone.pid);
      await Promise.all(clones.map((clone) => clone.close()));
      assert.deepEqual(
        pids.filter((pid) => alive(pid)),
        [],
        'no clone QEMU is left running',
      );
    } finally {
      await Promise.all(clones.map((clone) => clone.close()));
    }
    // A fresh restore still sees the snapshot's state, untouched by the clones.
    await using fresh = await restoreMachine(snapshot, { name: 'fresh' });
    assert.equal(await fresh.succeed('cat /root/note /data/file'), 'in-ram\nfrom-setup\n');
  });

  it('keeps warm clones in a pool and stops the waiting ones on close', async () => {
    const pool = snapshot.pool({ size: 1, prefix: 'pooled' });
    try {
      const first = await pool.take();
      assert.equal(first.name, 'pooled-1');
      assert.equal(await first.succeed('cat /root/note'), 'in-ram\n');
      await first.close();
      await pool.whenReady();
      const second = await pool.take();
      assert.equal(await second.succeed('hostname'), 'pooled-2\n');
      await second.close();
      await pool.whenReady();
      const waiting = await (pool as unknown as { ready: Promise<Machine>[] }).ready[0];
      assert.ok(waiting, 'a clone waits in the pool');
      process.kill(waiting.pid, 'SIGKILL');
      await waiting.waitForShutdown({ timeoutMs: 10_000 });
      const replacement = await pool.take(); // pooled-3 died while waiting: a fresh clone instead
      assert.equal(await replacement.succeed('hostname'), 'pooled-5\n');
      await replacement.close();
    } finally {
      await pool.close();
    }
    const running = readdirSync('/proc')
      .filter((entry) => /^\d+$/.test(entry))
      .filter((pid) => {
        try {
          return /-name\0pooled-\d+\0/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
        } catch {
          return false;
        }
      });
    assert.deepEqual(running, [], 'the clones waiting in the pool were stopped');
    await assert.rejects(pool.take(), /closed/);
  });

  it('snapshots a restored clone too (its RAM travels in the migration stream)', async () => {
    await using clone = await restoreMachine(snapshot, { name: 'second-gen' });
    await clone.succeed('echo second > /root/gen');
    const second = await clone.snapshot();
    extraDirs.push(second.dir);
    assert.equal(second.manifest.ramInStream, true);
    await using grandchild = await restoreMachine(second, { name: 'third-gen' });
    assert.equal(
      await grandchild.succeed('cat /root/gen /root/note /data/file'),
      'second\nin-ram\nfrom-setup\n',
    );
  });

  it('refuses a tampered snapshot', async () => {
    const copy = `${snapshot.dir}-tampered`;
    extraDirs.push(copy);
    await cp(snapshot.dir, copy, { recursive: true });
    const state = await readFile(join(copy, 'state'));
    state[state.length - 100] = (state[state.length - 100] ?? 0) ^ 0xff;
    await writeFile(join(copy, 'state'), state);
    const manifest = JSON.parse(await readFile(join(copy, 'manifest.json'), 'utf8')) as SnapshotManifest;
    manifest.id = `${manifest.id}-tampered`;
    await writeFile(join(copy, 'manifest.json'), JSON.stringify(manifest));
    const tampered = await openSnapshot(manifest.id);
    await assert.rejects(restoreMachine(tampered, { name: 'tampered' }), /tampered with: state/);
    state[state.length - 100] = (state[state.length - 100] ?? 0) ^ 0xff; // undo: only the RAM is wrong now
    await writeFile(join(copy, 'state'), state);
    await writeFile(join(copy, 'ram'), 'short');
    await assert.rejects(restoreMachine(tampered, { name: 'tampered' }), /damaged: ram has 5 bytes/);
    const removed = await runCli(['snapshot', 'rm', manifest.id]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(removed.stdout, `removed ${manifest.id}\n`);
    assert.equal(existsSync(copy), false, 'vmkit snapshot rm removed its folder');
  });

  it('refuses a mismatched configuration or QEMU version with a clear error', async () => {
    await assert.rejects(restoreMachine(snapshot, { memoryMiB: 512 }), (error: Error) => {
      assert.ok(error instanceof ConfigError, String(error));
      assert.match(error.message, /has memoryMiB 256; it cannot be restored with 512/);
      return true;
    });
    const copy = `${snapshot.dir}-oldqemu`;
    extraDirs.push(copy);
    await cp(snapshot.dir, copy, { recursive: true });
    const manifest = JSON.parse(await readFile(join(copy, 'manifest.json'), 'utf8')) as SnapshotManifest;
    manifest.id = `${manifest.id}-oldqemu`;
    manifest.identity.vmmVersion = 'QEMU emulator version 1.0.0';
    await writeFile(join(copy, 'manifest.json'), JSON.stringify(manifest));
    const old = await openSnapshot(manifest.id);
    await assert.rejects(
      restoreMachine(old),
      /taken with "QEMU emulator version 1.0.0" but this is "QEMU emulator/,
    );
    const listed = await runCli(['snapshot', 'list']);
    assert.equal(listed.code, 0, listed.stderr);
    const line = listed.stdout.split('\n').find((entry) => entry.startsWith(`${manifest.id}\t`));
    assert.match(line ?? listed.stdout, /\tNOT RESTORABLE: taken with "QEMU emulator version 1\.0\.0"/);
    const pruned = await pruneSnapshots();
    assert.ok(
      pruned.some(
        (entry) => entry.id === manifest.id && /taken with "QEMU emulator version 1.0.0"/.test(entry.reason),
      ),
      `prune removed the unrestorable snapshot: ${JSON.stringify(pruned)}`,
    );
  });

  it('a named snapshot replaces the older one of its name; unnamed ones get ids of their own; stop: true leaves it paused', async () => {
    await template.succeed('echo first > /root/named');
    const first = await template.snapshot('named-twice');
    extraDirs.push(first.dir);
    await template.succeed('echo second > /root/named');
    const second = await template.snapshot('named-twice');
    assert.equal(second.manifest.id, first.manifest.id, 'the same name and configuration: the same id');
    assert.equal(second.dir, first.dir);
    await using clone = await restoreMachine(await openSnapshot(first.manifest.id), { name: 'named' });
    assert.equal(await clone.succeed('cat /root/named'), 'second\n', 'the store holds the newer one');
    const unnamed = [await template.snapshot(), await template.snapshot(undefined, { stop: true })];
    extraDirs.push(...unnamed.map((taken) => taken.dir));
    assert.notEqual(unnamed[0]?.manifest.id, unnamed[1]?.manifest.id);
    // stop: true leaves the machine paused after the snapshot.
    assert.match(await template.sendMonitorCommand('info status'), /paused/);
    await template.sendMonitorCommand('cont');
    assert.equal(await template.succeed('cat /root/named'), 'second\n');
  });
});

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  type DetachedRecord,
  isRunning,
  processesNaming,
  readRecord,
  recordMismatch,
  spawnDetached,
  stopDetached,
} from '../../src/runtime/detached.js';
import { processStartTicks } from '../../src/runtime/reaper.js';

describe('detached processes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-detached-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const marker = join(dir, 'marker');
  // One process that waits a minute; its command line names the marker.
  const start = (extra = '') =>
    spawnDetached({
      program: process.execPath,
      args: ['-e', `${extra}setTimeout(() => {}, 60000)`, marker],
      logPath: join(dir, 'log'),
      recordPath: join(dir, 'record.json'),
      marker,
    });

  test('runs in a session of its own, is recorded, found by its marker, and stopped', async () => {
    const record = start();
    assert.deepEqual(readRecord(join(dir, 'record.json')), record);
    assert.ok(isRunning(record));
    const sid = Number(readFileSync(`/proc/${record.pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[3]);
    assert.equal(sid, record.pid, 'not the leader of a session of its own');
    assert.deepEqual(
      processesNaming(marker).map((found) => found.pid),
      [record.pid],
    );
    await stopDetached(record);
    assert.equal(isRunning(record), false);
  });

  test('a recorded pid whose process is not the recorded one is never signalled', async () => {
    const other = spawn('sleep', ['60']);
    const pid = other.pid as number;
    const forged = { pid, startTicks: '', marker, program: 'sleep', startedAt: '' };
    assert.equal(isRunning(forged), false, 'its command line does not name the marker');
    await stopDetached(forged);
    assert.equal(other.exitCode, null);
    assert.equal(other.signalCode, null);
    other.kill('SIGKILL');
  });

  test('a process ignoring SIGTERM is killed after the grace period', async () => {
    const record = start("process.on('SIGTERM', () => {}); ");
    await stopDetached(record, 300);
    assert.equal(isRunning(record), false);
  });

  test('refuses a command line that does not name the marker', () => {
    assert.throws(
      () =>
        spawnDetached({
          program: 'sleep',
          args: ['1'],
          logPath: join(dir, 'l'),
          recordPath: join(dir, 'r'),
          marker,
        }),
      /must name/,
    );
  });

  describe('the check before a signal: start time and command line must match the record', () => {
    /** A process not started by vmkit (as a forged record would name), and its true record. */
    const victim = () => {
      const child = spawn('sleep', ['60.5']);
      const pid = child.pid as number;
      const record: DetachedRecord = {
        pid,
        startTicks: processStartTicks(pid) ?? 'none',
        marker: '60.5',
        program: 'sleep',
        startedAt: '',
      };
      return { child, record };
    };
    const untouched = async (child: ReturnType<typeof spawn>, forged: DetachedRecord) => {
      const refusals: string[] = [];
      await stopDetached(forged, 0, (reason) => refusals.push(reason));
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(child.exitCode, null, 'it was signalled');
      assert.equal(child.signalCode, null, 'it was signalled');
      return refusals;
    };

    test('the true record matches', () => {
      const { child, record } = victim();
      try {
        assert.equal(recordMismatch(record), undefined);
        assert.ok(isRunning(record));
      } finally {
        child.kill('SIGKILL');
      }
    });

    test('another start time: refused, logged, never signalled', async () => {
      const { child, record } = victim();
      try {
        const forged = { ...record, startTicks: String(Number(record.startTicks) - 7) };
        assert.match(recordMismatch(forged) ?? '', /started at tick \d+, not at the recorded/);
        const refusals = await untouched(child, forged);
        assert.equal(refusals.length, 1);
        assert.match(refusals[0] ?? '', /not signalled: pid \d+ started at tick/);
      } finally {
        child.kill('SIGKILL');
      }
    });

    test('a command line without the marker: refused, logged, never signalled', async () => {
      const { child, record } = victim();
      try {
        const forged = { ...record, marker: join(dir, 'qmp.sock') };
        assert.match(recordMismatch(forged) ?? '', /command line of pid \d+ does not name/);
        assert.equal((await untouched(child, forged)).length, 1);
      } finally {
        child.kill('SIGKILL');
      }
    });

    test('no start time or no marker in the record matches nothing (an empty one named any process)', async () => {
      const { child, record } = victim();
      try {
        for (const forged of [
          { ...record, startTicks: '' },
          { ...record, marker: '' },
        ]) {
          assert.match(recordMismatch(forged) ?? '', /lacks a start time or a marker/);
          assert.equal((await untouched(child, forged)).length, 1);
        }
        assert.match(recordMismatch({ ...record, pid: 1 }) ?? '', /not a process vmkit started/);
      } finally {
        child.kill('SIGKILL');
      }
    });

    test('a pid that is gone: not running, nothing to log', async () => {
      const { child, record } = victim();
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      assert.match(recordMismatch(record) ?? '', /is gone$/);
      const refusals: string[] = [];
      await stopDetached(record, 0, (reason) => refusals.push(reason));
      assert.deepEqual(refusals, []);
    });
  });
});

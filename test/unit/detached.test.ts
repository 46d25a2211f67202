import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  isRunning,
  processesNaming,
  readRecord,
  spawnDetached,
  stopDetached,
} from '../../src/runtime/detached.js';

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
});

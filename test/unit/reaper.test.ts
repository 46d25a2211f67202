// The reaper's rule for RAM files of detached VMMs (a fleet's instances): removed once no process
// names them and nothing wrote them for the grace period; kept otherwise.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { reapStaleRuns } from '../../src/runtime/reaper.js';

const scratch = mkdtempSync(join(tmpdir(), 'vmkit-reaper-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

describe('the reaper and RAM files of detached VMMs', () => {
  test('removes an old one nobody names; keeps one a process names, a young one, and other files', async () => {
    const shared = join(scratch, 'shm');
    const runs = join(scratch, 'runs');
    mkdirSync(shared);
    mkdirSync(runs);
    const file = (name: string, ageMinutes: number) => {
      const path = join(shared, name);
      writeFileSync(path, 'ram');
      const when = new Date(Date.now() - ageMinutes * 60_000);
      utimesSync(path, when, when);
      return path;
    };
    const orphan = file('vmkit-fleet-aaaaaaaaaaaa-live.ram', 20);
    const named = file('vmkit-fleet-bbbbbbbbbbbb-live.ram', 20);
    const young = file('vmkit-fleet-cccccccccccc-live.ram', 1);
    const other = file('someone-else.ram', 20);
    // A stand-in for the VMM that maps `named`: its command line names the file, as QEMU's does.
    const holder = spawn(
      process.execPath,
      ['-e', 'setTimeout(() => {}, 60_000)', `mem-path=${named},share=on`],
      {
        stdio: 'ignore',
      },
    );
    try {
      // Its command line is the file's from the exec on, which 'spawn' follows.
      await once(holder, 'spawn', { signal: AbortSignal.timeout(30_000) });
      const report = reapStaleRuns(runs, { sharedFiles: [shared], detachedGraceMs: 10 * 60_000 });
      assert.equal(report.files, 1);
      assert.deepEqual(
        [orphan, named, young, other].map((path) => existsSync(path)),
        [false, true, true, true],
      );
    } finally {
      holder.kill('SIGKILL');
    }
  });
});

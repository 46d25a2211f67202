// No VM outlives the driver: SIGINT, SIGTERM and SIGKILL of a running `vmkit run`.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { alive, cli, root, runCli } from '../helpers.js';

function startHangingRun(runDir: string): {
  child: ChildProcess;
  up: Promise<void>;
  exited: Promise<number | null>;
} {
  const child = spawn(process.execPath, [cli, 'run', 'test/fixtures/hang.ts'], {
    cwd: root,
    env: { ...process.env, VMKIT_RUN_DIR: runDir },
  });
  let stderr = '';
  const up = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`machine did not come up:\n${stderr}`)), 120_000);
    child.stderr?.on('data', (chunk) => {
      stderr += chunk;
      if (stderr.includes('waiting to be interrupted')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code, signal) => resolve(code ?? (signal ? -1 : null))),
  );
  return { child, up, exited };
}

/** The pids recorded by machines under a run root: r/<run>/<machine>/vmm.pid. */
function recordedPids(runDir: string): number[] {
  const runs = join(runDir, 'r');
  if (!existsSync(runs)) return [];
  return readdirSync(runs).flatMap((run) =>
    readdirSync(join(runs, run), { withFileTypes: true })
      .filter((entry) => entry.isDirectory() && existsSync(join(runs, run, entry.name, 'vmm.pid')))
      .map((entry) => Number(readFileSync(join(runs, run, entry.name, 'vmm.pid'), 'utf8'))),
  );
}

async function waitUntil(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('cleanup of an interrupted run', () => {
  /** A hanging `vmkit run` with its machine up, in a run root of its own. */
  async function withHangingRun(
    body: (run: ReturnType<typeof startHangingRun>, pid: number, runDir: string) => Promise<void>,
  ): Promise<void> {
    const runDir = await mkdtemp(join(tmpdir(), 'vmkit-cleanup-'));
    try {
      const run = startHangingRun(runDir);
      await run.up;
      const [pid] = recordedPids(runDir);
      assert.ok(pid && alive(pid), 'QEMU runs while the test runs');
      await body(run, pid, runDir);
    } finally {
      await rm(runDir, { recursive: true, force: true });
    }
  }

  for (const [signal, expectedCode] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`${signal}: stops QEMU, removes the state folder, exits ${expectedCode}`, async () => {
      await withHangingRun(async (run, pid, runDir) => {
        run.child.kill(signal);
        assert.equal(await run.exited, expectedCode);
        assert.equal(alive(pid), false, 'QEMU is gone');
        assert.deepEqual(readdirSync(join(runDir, 'r')), [], 'run folder removed');
      });
    });
  }

  it('SIGKILL: QEMU dies with the driver, and the next run reaps the leftovers', async () => {
    await withHangingRun(async (run, pid, runDir) => {
      run.child.kill('SIGKILL');
      await run.exited;
      await waitUntil(() => !alive(pid), 10_000, 'QEMU to die with its parent');
      assert.equal(readdirSync(join(runDir, 'r')).length, 1, 'the killed run left its folder');
      const doctor = await runCli(['doctor'], { VMKIT_RUN_DIR: runDir }, 60_000);
      assert.match(doctor.stdout, /1 stale run folder\(s\) removed/);
      assert.deepEqual(readdirSync(join(runDir, 'r')), []);
    });
  });
});

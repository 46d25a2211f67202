// A `vmkit run` killed at chosen and at random moments leaves nothing behind once the next vmkit
// (here `vmkit doctor`) has run: no VMM, no run folder, no RAM file in /dev/shm, no half-taken
// snapshot in the store.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, watch } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { alive, cli, lacks, root, runCli } from '../helpers.js';

const SHM = '/dev/shm';
const snapshotStore = () =>
  process.env.VMKIT_SNAPSHOT_DIR ||
  join(
    process.env.VMKIT_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'vmkit'),
    'snapshots',
  );

/** Every VMM pid recorded under a run root: r/<run>/<machine>/vmm.pid. */
function recordedPids(runRoot: string): number[] {
  const runs = join(runRoot, 'r');
  if (!existsSync(runs)) return [];
  return readdirSync(runs).flatMap((run) =>
    readdirSync(join(runs, run), { withFileTypes: true }).flatMap((entry) => {
      const file = join(runs, run, entry.name, 'vmm.pid');
      return entry.isDirectory() && existsSync(file) ? [Number(readFileSync(file, 'utf8'))] : [];
    }),
  );
}

/** What a run with process id `pid` left: its files in /dev/shm and in the snapshot store. */
function leftovers(pid: number): string[] {
  const mine = (name: string) =>
    name.startsWith(`vmkit-${pid}-`) || name.startsWith(`.taking-${pid}-`) || name.includes(`.old-${pid}-`);
  // The store folder does not exist until the first snapshot of this cache is taken.
  const names = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);
  return [SHM, snapshotStore()].flatMap((dir) =>
    names(dir)
      .filter(mine)
      .map((name) => join(dir, name)),
  );
}

/**
 * Starts `vmkit run --fresh` of the kill fixture in a run root of its own and SIGKILLs it when
 * `killWhen` says so (it is given a function that kills). Returns the pid, the VMM pids recorded
 * at the moment of the kill, and the run root.
 */
async function killedRun(
  killWhen: (kill: () => void, pid: number) => () => void,
): Promise<{ pid: number; vmms: number[]; runRoot: string; leftAtKill: string[] }> {
  const runRoot = await mkdtemp(join(tmpdir(), 'vmkit-kill-'));
  const child = spawn(process.execPath, [cli, 'run', '--fresh', 'test/fixtures/kill-suite.ts'], {
    cwd: root,
    env: { ...process.env, VMKIT_RUN_DIR: runRoot },
    stdio: 'ignore',
  });
  const pid = child.pid ?? -1;
  let vmms: number[] = [];
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const kill = () => {
    vmms = recordedPids(runRoot);
    child.kill('SIGKILL');
  };
  const stopWatching = killWhen(kill, pid);
  const guard = setTimeout(kill, 90_000); // a run that never reaches the moment still ends
  try {
    await exited;
    return { pid, vmms, runRoot, leftAtKill: leftovers(pid) };
  } finally {
    // Even when the check above throws: a live watcher or timer would keep this file's process up.
    clearTimeout(guard);
    stopWatching();
  }
}

/** Runs `vmkit doctor` on the run root and checks that nothing of the killed run is left. */
async function assertNothingLeft(run: { pid: number; vmms: number[]; runRoot: string }): Promise<void> {
  try {
    const doctor = await runCli(['doctor'], { VMKIT_RUN_DIR: run.runRoot }, 60_000);
    for (const vmm of run.vmms) {
      const deadline = Date.now() + 10_000;
      while (alive(vmm) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(alive(vmm), false, `QEMU ${vmm} of the killed run is gone`);
    }
    const runs = join(run.runRoot, 'r');
    assert.deepEqual(existsSync(runs) ? readdirSync(runs) : [], [], 'no run folder is left');
    assert.deepEqual(
      leftovers(run.pid),
      [],
      `no RAM file and no half-taken snapshot is left\n${doctor.stdout}`,
    );
  } finally {
    await rm(run.runRoot, { recursive: true, force: true });
  }
}

/** Kills as soon as a file whose name starts with `prefix` appears in `dir`. */
const onFileAppearing = (dir: string, prefix: (pid: number) => string) => (kill: () => void, pid: number) => {
  mkdirSync(dir, { recursive: true });
  const watcher = watch(dir, (_event, name) => {
    if (name?.startsWith(prefix(pid))) kill();
  });
  return () => watcher.close();
};

/** A small seeded generator (mulberry32), so that the random kill moments are the same every run. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('a killed run leaves nothing behind', { skip: lacks('snapshot') }, () => {
  // Any vmkit that starts meanwhile (other test files run in parallel) may reap these leftovers
  // before `vmkit doctor` does: what counts is that they existed at the kill and are gone after.
  it('killed right after its RAM file was created in /dev/shm, before QEMU mapped it', async () => {
    const run = await killedRun(onFileAppearing(SHM, (pid) => `vmkit-${pid}-`));
    assert.ok(
      run.leftAtKill.some((path) => path.startsWith(`${SHM}/`)),
      'the kill left a RAM file',
    );
    await assertNothingLeft(run);
  });

  it('killed while a snapshot is being taken', async () => {
    const run = await killedRun(onFileAppearing(snapshotStore(), (pid) => `.taking-${pid}-`));
    assert.ok(
      run.leftAtKill.some((path) => path.includes('/.taking-')),
      'the kill left a half-taken snapshot',
    );
    await assertNothingLeft(run);
  });

  const random = seeded(20261122);
  for (let attempt = 1; attempt <= 3; attempt++) {
    const delayMs = Math.round(random() * 9000);
    it(`killed at a random moment (${attempt}: after ${delayMs} ms)`, async () => {
      const run = await killedRun((kill) => {
        const timer = setTimeout(kill, delayMs);
        return () => clearTimeout(timer);
      });
      await assertNothingLeft(run);
    });
  }
});

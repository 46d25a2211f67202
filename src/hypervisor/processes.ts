import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runtimeRoot } from '../util/paths.js';

/**
 * Bookkeeping that guarantees no VMM outlives vmkit: every process vmkit spawns is recorded
 * here and in its state folder. On exit the live ones are killed; folders of runs that died
 * without cleaning up (SIGKILL) are reaped by the next run. Only recorded pids whose command
 * line names their own state folder are ever signalled.
 */

interface Owner {
  pid: number;
  startTicks: string;
}

const live = new Map<number, { stateDir: string; exited: Promise<unknown> }>();
let runDir: string | undefined;
let keepRunDir = false;

/** This process's run folder, created (and stale runs reaped) on first use. */
export function currentRunDir(): string {
  if (runDir) return runDir;
  const root = join(runtimeRoot(), 'r');
  mkdirSync(root, { recursive: true, mode: 0o700 });
  reapStaleRuns();
  runDir = join(root, `${process.pid}-${randomBytes(3).toString('hex')}`);
  mkdirSync(runDir, { mode: 0o700 });
  const owner: Owner = { pid: process.pid, startTicks: processStartTicks(process.pid) ?? '' };
  writeFileSync(join(runDir, 'owner.json'), JSON.stringify(owner));
  process.once('exit', cleanupAtExit);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);
  return runDir;
}

/**
 * Cleans up, then lets the signal do what it would have done. When the program installed its
 * own handler for the signal, that handler decides whether to exit.
 */
function onSignal(signal: NodeJS.Signals): void {
  killAllTracked();
  if (process.listenerCount(signal) > 1) return;
  cleanupAtExit();
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, onSignal);
  process.kill(process.pid, signal);
}

/** Keep the run folder (logs, disks, sockets) for inspection instead of deleting it at exit. */
export function keepRunFolder(keep = true): void {
  keepRunDir = keep;
  if (runDir && keep) writeFileSync(join(runDir, 'keep'), '');
}

export function trackProcess(pid: number, stateDir: string, exited: Promise<unknown>): void {
  live.set(pid, { stateDir, exited });
  writeFileSync(join(stateDir, 'vmm.pid'), String(pid));
}

export function untrackProcess(pid: number): void {
  live.delete(pid);
}

/** Kills every tracked process at once (synchronously: also usable from an exit handler). */
export function killAllTracked(): void {
  for (const pid of live.keys()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  live.clear();
}

/** Kills every tracked process and waits (at most `timeoutMs`) until they are reaped. */
export async function stopAllTracked(timeoutMs = 5000): Promise<void> {
  const exits = [...live.values()].map((entry) => entry.exited);
  killAllTracked();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.allSettled(exits),
    new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
  ]);
  clearTimeout(timer);
}

function cleanupAtExit(): void {
  killAllTracked();
  if (runDir && !keepRunDir) rmSync(runDir, { recursive: true, force: true });
}

/** Removes run folders whose owner is gone, killing any VMM they recorded that still runs. */
export function reapStaleRuns(): { runs: number; killed: number } {
  const root = join(runtimeRoot(), 'r');
  let runs = 0;
  let killed = 0;
  for (const name of safeReaddir(root)) {
    const dir = join(root, name);
    if (dir === runDir || existsSync(join(dir, 'keep'))) continue;
    if (ownerAlive(dir)) continue;
    for (const machine of safeReaddir(dir)) {
      const machineDir = join(dir, machine);
      const pid = Number(safeRead(join(machineDir, 'vmm.pid')));
      if (pid > 0 && processMentions(pid, machineDir)) {
        try {
          process.kill(pid, 'SIGKILL');
          killed++;
        } catch {}
      }
    }
    rmSync(dir, { recursive: true, force: true });
    runs++;
  }
  return { runs, killed };
}

function ownerAlive(dir: string): boolean {
  try {
    const owner = JSON.parse(readFileSync(join(dir, 'owner.json'), 'utf8')) as Owner;
    const ticks = processStartTicks(owner.pid);
    return ticks !== undefined && ticks === owner.startTicks;
  } catch {
    return false;
  }
}

/** Field 22 of /proc/PID/stat: distinguishes a live owner from a recycled pid. */
function processStartTicks(pid: number): string | undefined {
  const stat = safeRead(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

function processMentions(pid: number, text: string): boolean {
  return (safeRead(`/proc/${pid}/cmdline`) ?? '').split('\0').some((arg) => arg.includes(text));
}

function safeRead(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function safeReaddir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

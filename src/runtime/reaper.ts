import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Removes what runs that died without cleaning up (SIGKILL) left behind. Only recorded pids whose
 * command line names their own state folder are ever signalled, so a recycled pid is never hit.
 */

/** Who made a run folder: a pid and its start time, which together survive pid reuse. */
export interface RunOwner {
  pid: number;
  startTicks: string;
}

export const ownerFile = (runDir: string) => join(runDir, 'owner.json');
export const keepMarker = (runDir: string) => join(runDir, 'keep');

export interface ReapReport {
  runs: number;
  killed: number;
  /** Files outside run folders (RAM files in /dev/shm) that belonged to dead runs. */
  files: number;
}

/**
 * Reaps run folders under `runsRoot` whose owner is gone (skipping `except` and kept ones),
 * killing any VMM they recorded that still runs, and removes `extraFiles` that name a dead run.
 */
export function reapStaleRuns(
  runsRoot: string,
  options: { except?: Set<string>; sharedFiles?: string[]; detachedGraceMs?: number } = {},
): ReapReport {
  const report: ReapReport = { runs: 0, killed: 0, files: 0 };
  for (const name of safeReaddir(runsRoot)) {
    const dir = join(runsRoot, name);
    if (options.except?.has(dir) || existsSync(keepMarker(dir))) continue;
    if (ownerAlive(dir)) continue;
    for (const machine of safeReaddir(dir)) {
      const machineDir = join(dir, machine);
      const pid = Number(safeRead(join(machineDir, 'vmm.pid')));
      if (pid > 0 && processMentions(pid, machineDir)) {
        try {
          process.kill(pid, 'SIGKILL');
          report.killed++;
        } catch {}
      }
    }
    rmSync(dir, { recursive: true, force: true });
    report.runs++;
  }
  for (const dir of options.sharedFiles ?? []) {
    report.files += reapRunFiles(dir, runsRoot);
    report.files += reapUnnamedRamFiles(dir, options.detachedGraceMs ?? DETACHED_RAM_GRACE_MS);
  }
  return report;
}

/** How long a detached VMM's RAM file may go unnamed by any process before it is reaped. */
export const DETACHED_RAM_GRACE_MS = 10 * 60_000;

/**
 * RAM files of detached VMMs (`vmkit-fleet-…`, named after their fleet folder, not a run) that no
 * running process names and that nothing wrote for `graceMs`: left when the VMM and the program
 * that would have removed them were both killed. (A wake fills the file while its VMM starts, so a
 * file is only that young without a VMM; the grace covers it many times over.)
 */
function reapUnnamedRamFiles(dir: string, graceMs: number): number {
  const now = Date.now();
  const candidates = safeReaddir(dir)
    .filter((name) => name.startsWith('vmkit-fleet-') && name.endsWith('.ram'))
    .map((name) => join(dir, name))
    .filter((path) => {
      const modified = safeMtime(path);
      return modified !== undefined && now - modified > graceMs;
    });
  if (candidates.length === 0) return 0;
  const unnamed = new Set(candidates);
  for (const pid of safeReaddir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const args = safeRead(`/proc/${pid}/cmdline`) ?? '';
    for (const path of unnamed) if (args.includes(path)) unnamed.delete(path);
  }
  for (const path of unnamed) rmSync(path, { force: true });
  return unnamed.size;
}

/**
 * Files named `vmkit-<run>-…` in `dir` (RAM files in /dev/shm) whose run folder is gone and whose
 * owner pid no longer runs: left by a run killed between creating the file and QEMU mapping it.
 */
function reapRunFiles(dir: string, runsRoot: string): number {
  let removed = 0;
  for (const name of safeReaddir(dir)) {
    const run = name.match(/^vmkit-((\d+)-[0-9a-f]+)-/);
    if (!run?.[1]) continue;
    const pid = Number(run[2]);
    if (existsSync(join(runsRoot, run[1])) || processStartTicks(pid) !== undefined) continue;
    rmSync(join(dir, name), { force: true });
    removed++;
  }
  return removed;
}

export function ownerAlive(dir: string): boolean {
  try {
    const owner = JSON.parse(readFileSync(ownerFile(dir), 'utf8')) as RunOwner;
    const ticks = processStartTicks(owner.pid);
    return ticks !== undefined && ticks === owner.startTicks;
  } catch {
    return false;
  }
}

/** Field 22 of /proc/PID/stat: distinguishes a live owner from a recycled pid. */
export function processStartTicks(pid: number): string | undefined {
  const stat = safeRead(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

function processMentions(pid: number, text: string): boolean {
  return (safeRead(`/proc/${pid}/cmdline`) ?? '').split('\0').some((arg) => arg.includes(text));
}

function safeMtime(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
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

import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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
  options: { except?: Set<string>; sharedFiles?: string[] } = {},
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
  for (const dir of options.sharedFiles ?? []) report.files += reapRunFiles(dir, runsRoot);
  return report;
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

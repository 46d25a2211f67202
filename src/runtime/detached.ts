import { spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { ConfigError, HostToolError } from '../errors.js';
import { processStartTicks } from './reaper.js';

/**
 * Processes that outlive the vmkit process that started them (fleet instances' VMMs, a tenant's
 * switch, later per-project VMs): started in a session of their own with no parent-death signal,
 * recorded in a small JSON file next to their other files, found again by any later vmkit
 * process, and ended only when the recorded pid is still the same process (its start time) and
 * its command line still names the `marker` (a path inside its own folder).
 */
export interface DetachedRecord {
  pid: number;
  startTicks: string;
  marker: string;
  program: string;
  startedAt: string;
}

export interface DetachedSpawn {
  program: string;
  args: string[];
  /** Where stdout and stderr go. */
  logPath: string;
  /** Where the record is written. */
  recordPath: string;
  /** A string on the command line that names this process alone: a path in its folder. */
  marker: string;
  env?: NodeJS.ProcessEnv;
}

export function spawnDetached(options: DetachedSpawn): DetachedRecord {
  if (!options.args.some((arg) => arg.includes(options.marker))) {
    throw new ConfigError(
      `spawnDetached: the command line of ${options.program} must name ${options.marker}`,
    );
  }
  const log = openSync(options.logPath, 'a');
  try {
    const child = spawn(options.program, options.args, {
      detached: true,
      stdio: ['ignore', log, log],
      env: options.env ?? process.env,
    });
    if (child.pid === undefined) throw new HostToolError(`could not start ${options.program}`);
    child.unref();
    const record: DetachedRecord = {
      pid: child.pid,
      startTicks: processStartTicks(child.pid) ?? '',
      marker: options.marker,
      program: options.program,
      startedAt: new Date().toISOString(),
    };
    writeRecord(options.recordPath, record);
    return record;
  } finally {
    closeSync(log);
  }
}

function writeRecord(path: string, record: DetachedRecord): void {
  writeFileSync(`${path}.part`, JSON.stringify(record));
  renameSync(`${path}.part`, path);
}

export function readRecord(path: string): DetachedRecord | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as DetachedRecord;
  } catch {
    return undefined;
  }
}

function commandLine(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

/** Whether the recorded process still runs: same pid, same start time, marker on its command line. */
export function isRunning(record: DetachedRecord | undefined): record is DetachedRecord {
  return isAlive(record) && commandLine(record.pid).some((arg) => arg.includes(record.marker));
}

/**
 * Whether the recorded process is still alive (same pid and start time, not a zombie), whatever
 * its command line: it reads empty for a moment while the process execs its next program.
 */
export function isAlive(record: DetachedRecord | undefined): record is DetachedRecord {
  if (!record) return false;
  const ticks = processStartTicks(record.pid);
  if (ticks === undefined || (record.startTicks && ticks !== record.startTicks)) return false;
  let state: string | undefined;
  try {
    state = readFileSync(`/proc/${record.pid}/stat`, 'utf8').split(') ')[1]?.[0];
  } catch {
    return false;
  }
  return state !== 'Z'; // a zombie exited, not yet reaped by its parent
}

/**
 * Every running process whose command line names `marker`: what a start killed between spawn
 * and writing its record left behind.
 */
export function processesNaming(marker: string): DetachedRecord[] {
  const found: DetachedRecord[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    const args = commandLine(pid);
    if (!args.some((arg) => arg.includes(marker))) continue;
    const record = {
      pid,
      startTicks: processStartTicks(pid) ?? '',
      marker,
      program: args[0] ?? '',
      startedAt: '',
    };
    if (isRunning(record)) found.push(record);
  }
  return found;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until the recorded process is gone; false when it still runs after `timeoutMs`. */
export async function waitForExit(record: DetachedRecord, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isRunning(record)) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/**
 * Ends the recorded process if it is still the one recorded: SIGTERM, then SIGKILL after
 * `graceMs`. Resolves once it is gone; a process that is not (or no longer) the recorded one is
 * never signalled.
 */
export async function stopDetached(record: DetachedRecord | undefined, graceMs = 3000): Promise<void> {
  if (!isRunning(record)) return;
  const signal = (name: NodeJS.Signals) => {
    try {
      if (isRunning(record)) process.kill(record.pid, name);
    } catch {}
  };
  if (graceMs > 0) {
    signal('SIGTERM');
    if (await waitForExit(record, graceMs)) return;
  }
  signal('SIGKILL');
  if (!(await waitForExit(record, 5000))) {
    throw new HostToolError(`process ${record.pid} (${record.program}) did not end after SIGKILL`);
  }
}

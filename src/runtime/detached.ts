import { spawn } from 'node:child_process';
import {
  closeSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { ConfigError, HostToolError } from '../errors.js';
import { PRIVATE_FILE, withPrivateUmask } from '../util/private.js';
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
  const log = openSync(options.logPath, 'a', PRIVATE_FILE);
  try {
    // Under umask 077, whatever the caller's: the sockets and files it makes are its user's alone.
    const command = withPrivateUmask(options.program, options.args);
    const child = spawn(command.program, command.args, {
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

/**
 * The record of the child the recorded process forked to run its program in a pid namespace of
 * its own (a wrapper such as `unshare --pid --fork`), written in its place; undefined while it
 * has none yet. Only a child in another pid namespace than the wrapper's: a wrapper's script
 * forks helpers (mount, mkdir) first, which carry its command line until they exec.
 */
export function recordChildOf(record: DetachedRecord, recordPath: string): DetachedRecord | undefined {
  const own = pidNamespace(record.pid);
  const child = childrenOf(record.pid).find((pid) => {
    const ns = pidNamespace(pid);
    return own !== undefined && ns !== undefined && ns !== own;
  });
  const startTicks = child === undefined ? undefined : processStartTicks(child);
  if (child === undefined || startTicks === undefined) return undefined;
  const adopted = { ...record, pid: child, startTicks };
  writeRecord(recordPath, adopted);
  return adopted;
}

function pidNamespace(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
}

function childrenOf(pid: number): number[] {
  try {
    const listed = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
    return listed ? listed.split(' ').map(Number) : [];
  } catch {
    return [];
  }
}

function writeRecord(path: string, record: DetachedRecord): void {
  writeFileSync(`${path}.part`, JSON.stringify(record), { mode: PRIVATE_FILE });
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

/**
 * Why the recorded process is not (or no longer) the one recorded, or undefined when it is: the
 * same pid, the same start time (so not a later process that reuses the pid), alive, and its
 * command line naming the marker. A record with no start time or no marker never matches: it
 * would otherwise name any process. `ended` tells a process that is simply gone from a pid that
 * names some other live process (a refusal worth logging).
 */
function checkRecord(record: DetachedRecord | undefined): { reason: string; ended: boolean } | undefined {
  const refused = (reason: string) => ({ reason, ended: false });
  if (!record) return { reason: 'no record', ended: true };
  if (!Number.isInteger(record.pid) || record.pid <= 1)
    return refused(`pid ${String(record.pid)} is not a process vmkit started`);
  if (!record.startTicks || !record.marker)
    return refused(`the record of pid ${record.pid} lacks a start time or a marker`);
  const ticks = processStartTicks(record.pid);
  if (ticks === undefined) return { reason: `pid ${record.pid} is gone`, ended: true };
  if (ticks !== record.startTicks) {
    return refused(
      `pid ${record.pid} started at tick ${ticks}, not at the recorded ${record.startTicks}: another process`,
    );
  }
  if (zombie(record.pid)) return { reason: `pid ${record.pid} has exited`, ended: true };
  // A command line that reads empty is a process in the middle of an exec (every detached
  // process starts as the umask shell that execs it), still the one recorded by its start time.
  const args = commandLine(record.pid);
  if (!args.every((arg) => arg === '') && !args.some((arg) => arg.includes(record.marker))) {
    return refused(`the command line of pid ${record.pid} does not name ${record.marker}`);
  }
  return undefined;
}

export const recordMismatch = (record: DetachedRecord | undefined) => checkRecord(record)?.reason;

/** Whether the recorded process still runs: same pid, same start time, marker on its command line. */
export function isRunning(record: DetachedRecord | undefined): record is DetachedRecord {
  return checkRecord(record) === undefined;
}

function zombie(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] === 'Z';
  } catch {
    return true;
  }
}

/**
 * Whether the recorded process is still alive (same pid and start time, not a zombie), whatever
 * its command line: it reads empty for a moment while the process execs its next program.
 */
export function isAlive(record: DetachedRecord | undefined): record is DetachedRecord {
  if (!record?.startTicks) return false;
  const ticks = processStartTicks(record.pid);
  if (ticks === undefined || ticks !== record.startTicks) return false;
  return !zombie(record.pid); // a zombie exited, not yet reaped by its parent
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
 * never signalled, and `onRefused` hears why when the pid names a live process all the same.
 */
export async function stopDetached(
  record: DetachedRecord | undefined,
  graceMs = 3000,
  onRefused?: (reason: string) => void,
): Promise<void> {
  const mismatch = checkRecord(record);
  if (mismatch || !record) {
    if (mismatch && !mismatch.ended) onRefused?.(`not signalled: ${mismatch.reason}`);
    return;
  }
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

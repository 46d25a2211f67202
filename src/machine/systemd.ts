import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import {
  CommandFailedError,
  CommandTimeoutError,
  GuestRebootedError,
  TimeoutError,
  UnitStateError,
} from '../errors.js';
import { guestFilesDir } from '../util/paths.js';
import { shellQuote } from '../util/shell.js';
import { Deadline } from '../util/time.js';
import { parseInput, waitOptionsOf, wholeNumber } from '../util/validate.js';
import type { CommandOptions, ExecResult } from './commands.js';

/** What the systemd calls need of a machine: its name and a root shell. */
export interface GuestShell {
  readonly name: string;
  execute(command: string, options?: CommandOptions): Promise<ExecResult>;
}

export interface UserOption {
  /** Talk to this user's systemd instance (systemctl --user) instead of the system's. */
  user?: string;
}

export interface WaitForUnitOptions extends UserOption {
  /** The ActiveState to wait for (default "active"); e.g. "failed" or "inactive". */
  state?: string;
  timeoutMs?: number;
  /** Each run of the in-guest watch: one that blocks longer (a hung systemctl) is killed and run again. */
  attemptTimeoutMs?: number;
}

export interface JournalOptions {
  unit?: string;
  /** Only the last this many lines. */
  lines?: number;
  /** journalctl --since, e.g. "-5min" or "2024-01-01 10:00". */
  since?: string;
}

/** Unit names as systemd writes them: no spaces, quotes or shell metacharacters. */
const unitName = z
  .string({ error: 'must be a unit name' })
  .regex(/^[A-Za-z0-9:_.@\\-]{1,255}$/, { error: 'is not a unit name (letters, digits and :_.@-\\ only)' });
const userName = z
  .string({ error: 'must be a user name' })
  .regex(/^[a-z_][a-z0-9_-]{0,31}$/, { error: 'is not a user name' });
const unitState = z
  .string({ error: 'must be a unit state' })
  .regex(/^[a-z-]{1,32}$/, { error: 'is not a unit state like "active" or "failed"' });
const userOptions = z.object({ user: userName.optional() }, { error: 'must be an options object' }).strict();
const waitOptions = waitOptionsOf(
  { user: userName.optional(), state: unitState.optional() },
  'must be an options object like { user, state, timeoutMs, attemptTimeoutMs }',
);
const journalOptions = z
  .object({
    unit: unitName.optional(),
    lines: wholeNumber(1, 1_000_000).optional(),
    since: z.string({ error: 'must be a journalctl time' }).min(1).max(100).optional(),
  })
  .strict();

export function checkUnit(method: string, unit: unknown): string {
  return parseInput(unitName, unit, `${method}: unit`);
}

/** The systemctl command line, as root or as `user` against that user's manager. */
export function systemctlCommand(args: string, user?: string): string {
  if (!user) return `systemctl --no-pager ${args}`;
  const runtimeDir = `XDG_RUNTIME_DIR=/run/user/$(id -u ${shellQuote(user)})`;
  return `runuser -u ${shellQuote(user)} -- env ${runtimeDir} systemctl --user --no-pager ${args}`;
}

/** Runs systemctl with `args` (one string of shell words, or a list quoted word by word). */
export async function systemctl(
  machine: GuestShell,
  args: string | string[],
  options: UserOption = {},
): Promise<ExecResult> {
  const { user } = parseInput(userOptions, options, 'systemctl: options');
  const words = Array.isArray(args)
    ? parseInput(z.array(z.string()), args, 'systemctl: args').map(shellQuote).join(' ')
    : parseInput(z.string({ error: 'must be a string or a list of strings' }), args, 'systemctl: args');
  return machine.execute(systemctlCommand(words, user));
}

/** `systemctl show <unit>` as an object of its properties. */
export async function getUnitInfo(
  machine: GuestShell,
  unit: string,
  options: UserOption = {},
): Promise<Record<string, string>> {
  const name = checkUnit('getUnitInfo', unit);
  const { user } = parseInput(userOptions, options, 'getUnitInfo: options');
  const command = systemctlCommand(`show -- ${shellQuote(name)}`, user);
  const result = await machine.execute(command);
  if (result.exitCode !== 0)
    throw new CommandFailedError(command, result.exitCode, result.stdout, result.stderr);
  return parseProperties(result.stdout);
}

/** Parses `Key=Value` lines; a value may itself contain '='. */
export function parseProperties(text: string): Record<string, string> {
  const properties: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) properties[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return properties;
}

export async function getUnitProperty(
  machine: GuestShell,
  unit: string,
  property: string,
  options: UserOption = {},
): Promise<string> {
  parseInput(
    z.string().regex(/^[A-Za-z]+$/, { error: 'is not a property name' }),
    property,
    'getUnitProperty: property',
  );
  const info = await getUnitInfo(machine, unit, options);
  const value = info[property];
  if (value === undefined) {
    throw new UnitStateError(
      machine.name,
      unit,
      info.ActiveState ?? '',
      `has no property ${property}`,
      '',
      '',
    );
  }
  return value;
}

/** Throws a UnitStateError (with status and journal) unless the unit's ActiveState is `state`. */
export async function requireUnitState(
  machine: GuestShell,
  unit: string,
  state = 'active',
  options: UserOption = {},
): Promise<void> {
  parseInput(unitState, state, 'requireUnitState: state');
  const info = await getUnitInfo(machine, unit, options);
  const actual = info.ActiveState ?? '';
  if (actual !== state) {
    throw await unitError(machine, unit, actual, `is ${actual} (expected ${state})`, options.user);
  }
}

export async function startJob(
  machine: GuestShell,
  unit: string,
  options: UserOption = {},
): Promise<ExecResult> {
  return systemctl(machine, ['start', checkUnit('startJob', unit)], options);
}

export async function stopJob(
  machine: GuestShell,
  unit: string,
  options: UserOption = {},
): Promise<ExecResult> {
  return systemctl(machine, ['stop', checkUnit('stopJob', unit)], options);
}

/** The journal as text (journalctl --no-pager), of one unit or all. */
export async function journal(machine: GuestShell, options: JournalOptions = {}): Promise<string> {
  const { unit, lines, since } = parseInput(journalOptions, options, 'journal: options');
  const command = [
    'journalctl --no-pager',
    ...(unit ? [`-u ${shellQuote(unit)}`] : []),
    ...(lines ? [`-n ${lines}`] : []),
    ...(since ? [`--since ${shellQuote(since)}`] : []),
  ].join(' ');
  const result = await machine.execute(command);
  if (result.exitCode !== 0)
    throw new CommandFailedError(command, result.exitCode, result.stdout, result.stderr);
  return result.stdout;
}

/**
 * Waits until the unit's ActiveState is `state` (default "active"). Fails early, with
 * `systemctl status` and the journal tail, when the unit fails or goes inactive with no job
 * queued, unless that is the state awaited.
 */
export async function waitForUnit(
  machine: GuestShell,
  unit: string,
  options: WaitForUnitOptions,
  defaultTimeoutMs: number,
): Promise<void> {
  const name = checkUnit('waitForUnit', unit);
  const {
    user,
    state = 'active',
    timeoutMs: limit = defaultTimeoutMs,
    attemptTimeoutMs = limit,
  } = parseInput(waitOptions, options, 'waitForUnit: options');
  const waitScript = readFileSync(join(guestFilesDir(), 'debian', 'wait-for-unit.sh'), 'utf8');
  const script = `set -- ${[name, state, user ?? ''].map(shellQuote).join(' ')}\n${waitScript}`;
  const awaited = `unit ${name}${user ? ` of user ${user}` : ''} on ${machine.name} to be ${state}`;
  const deadline = new Deadline(limit, awaited);
  let result: ExecResult | undefined;
  let lastSeen = 'unknown (systemctl gave no state)';
  let attempts = 0;
  while (!result && !deadline.expired) {
    attempts++;
    try {
      const attemptMs = Math.max(1, Math.min(deadline.remaining(), attemptTimeoutMs));
      result = await machine.execute(script, { timeoutMs: attemptMs });
    } catch (error) {
      // The guest rebooted under the wait: wait again in the guest that came back.
      if (error instanceof GuestRebootedError) continue;
      if (!(error instanceof CommandTimeoutError)) throw error;
      lastSeen = error.stdout.trim().split('\n').pop() || lastSeen;
    }
  }
  if (!result) {
    const tries = attempts > 1 ? `; ${attempts} attempts of at most ${attemptTimeoutMs} ms` : '';
    throw new TimeoutError(awaited, limit, `ActiveState ${lastSeen}${tries}`);
  }
  if (result.exitCode === 0) return;
  const seen = result.stdout.trim().split('\n').pop() ?? '';
  const problem =
    result.exitCode === 3
      ? `failed (waiting for ${state})`
      : result.exitCode === 4
        ? `is inactive and no job is queued that could start it (waiting for ${state})`
        : `could not be watched: the wait script exited with status ${result.exitCode}: ${result.stderr.trim()}`;
  throw await unitError(machine, name, seen, problem, user);
}

async function unitError(
  machine: GuestShell,
  unit: string,
  state: string,
  problem: string,
  user?: string,
): Promise<UnitStateError> {
  const status = await machine.execute(`${systemctlCommand(`status -l -- ${shellQuote(unit)}`, user)} 2>&1`);
  const filter = user ? `--user-unit ${shellQuote(unit)}` : `-u ${shellQuote(unit)}`;
  const log = await machine.execute(`journalctl --no-pager -n 40 ${filter} 2>&1`);
  return new UnitStateError(machine.name, unit, state, problem, status.stdout, log.stdout);
}

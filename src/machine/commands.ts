import { guestSeconds, type RawResult } from '../agent/backdoor.js';
import { GuestProcess } from '../agent/process.js';
import {
  CommandFailedError,
  CommandTimeoutError,
  ConfigError,
  GuestRebootedError,
  MachineCrashedError,
} from '../errors.js';
import { MAX_TIMER_MS } from '../util/time.js';
import type { CommandObserver, CommandOutcome, CommandWatch, MachineInternals } from './internals.js';

export type { CommandObserver, CommandOutcome, CommandWatch } from './internals.js';

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface CommandOptions {
  timeoutMs?: number;
}

export interface WaitOptions {
  /** The whole wait. */
  timeoutMs?: number;
  /** Each attempt: a command that blocks longer is killed and tried again (at most timeoutMs). */
  attemptTimeoutMs?: number;
}

/** One or more commands, optionally followed by the options for each of them. */
export type CommandList = [string, ...string[]] | [string, ...string[], ExecuteOptions];

/** succeed/fail: each command in turn must exit 0 (or must not); their stdout joined. */
export async function expectStatus(
  method: string,
  list: CommandList,
  zero: boolean,
  run: (command: string, options: ExecuteOptions) => Promise<RawResult>,
): Promise<string> {
  const items: unknown[] = [...list];
  const last = items.at(-1);
  const hasOptions = typeof last === 'object' && last !== null;
  const options = (hasOptions ? last : {}) as ExecuteOptions;
  // Anything but the trailing options object is a command; run() refuses what is not a string.
  const commands = (hasOptions ? items.slice(0, -1) : items) as string[];
  if (commands.length === 0) throw new ConfigError(`${method}: give at least one command`);
  let stdout = '';
  for (const command of commands) {
    const result = toText(await run(command, options));
    if ((result.exitCode === 0) !== zero) {
      const expected = zero ? 'exit status 0' : 'a non-zero exit status';
      throw new CommandFailedError(command, result.exitCode, result.stdout, result.stderr, expected);
    }
    stdout += result.stdout;
  }
  return stdout;
}

export function toText(raw: RawResult): ExecResult {
  return { exitCode: raw.status, stdout: raw.stdout.toString('utf8'), stderr: raw.stderr.toString('utf8') };
}

/** Output of a command as it is produced. */
export type OutputListener = (chunk: Buffer) => void;

export interface ExecuteOptions {
  timeoutMs?: number;
  /** Receives stdout as the guest produces it; the call still resolves with the whole result. */
  onStdout?: OutputListener;
  onStderr?: OutputListener;
  /**
   * false: do not wait for the command, only until the guest started it (NixOS: check_return=
   * False, for commands that end the backdoor, like a reboot); resolves with exit code -1.
   */
  check?: boolean;
}

export interface SpawnOptions {
  /** The guest kills the process and everything it started after this long; none by default. */
  timeoutMs?: number;
}

/** How long past a streamed command's own timeout the host waits for the guest to report it. */
const GRACE_MS = 10_000;

/** Adds an observer of every command on the machine; returns its removal. */
export function observeCommands(internals: MachineInternals, observer: CommandObserver): () => void {
  internals.commandObservers.add(observer);
  return () => internals.commandObservers.delete(observer);
}

/**
 * Runs `command` to its end. Without output listeners (its own or an observer's) it takes the
 * backdoor's one-request path; with them it runs as a started process whose output streams in.
 * Either way the result holds all of stdout and stderr, and a timeout kills the whole session.
 */
export async function runCommand(
  internals: MachineInternals,
  method: string,
  command: string,
  options: ExecuteOptions,
): Promise<RawResult> {
  const timeoutMs = options.timeoutMs ?? internals.commandTimeoutMs;
  const watches = watchesOf(internals, command, method);
  const started = performance.now();
  try {
    for (const watch of watches) if (watch.before) await watch.before;
    if (options.check === false) {
      await GuestProcess.start(internals.agent, internals.name, command, {}, () => internals.console.tail());
      for (const watch of watches) watch.ended?.({ durationMs: Math.round(performance.now() - started) });
      return { status: -1, timedOut: false, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };
    }
    const streamed = options.onStdout || options.onStderr || watches.some((watch) => watch.output);
    const raw = streamed
      ? await runStreamed(internals, command, timeoutMs, options, watches)
      : await internals.agent.run(command, timeoutMs);
    const durationMs = Math.round(performance.now() - started);
    const outcome = {
      durationMs,
      exitCode: raw.status,
      timedOut: raw.timedOut,
      stdout: raw.stdout,
      stderr: raw.stderr,
    };
    for (const watch of watches) watch.ended?.(outcome);
    if (raw.timedOut) {
      throw new CommandTimeoutError(
        command,
        guestSeconds(timeoutMs) * 1000, // what the guest's watchdog, counting whole seconds, waited
        raw.stdout.toString('utf8'),
        raw.stderr.toString('utf8'),
      );
    }
    return raw;
  } catch (error) {
    if (!(error instanceof CommandTimeoutError)) {
      const durationMs = Math.round(performance.now() - started);
      for (const watch of watches) watch.ended?.({ durationMs, error: error as Error });
    }
    throw error;
  }
}

async function runStreamed(
  internals: MachineInternals,
  command: string,
  timeoutMs: number,
  options: ExecuteOptions,
  watches: CommandWatch[],
): Promise<RawResult> {
  const deliver = (stream: 'stdout' | 'stderr', listener?: OutputListener) => (chunk: Buffer) => {
    listener?.(chunk);
    for (const watch of watches) watch.output?.(stream, chunk);
  };
  const started = await GuestProcess.start(
    internals.agent,
    internals.name,
    command,
    {
      timeoutMs,
      keepAllOutput: true,
      onStdout: deliver('stdout', options.onStdout),
      onStderr: deliver('stderr', options.onStderr),
    },
    () => internals.console.tail(),
  );
  const waitMs = Math.min(guestSeconds(timeoutMs) * 1000 + GRACE_MS, MAX_TIMER_MS);
  const exit = await started.wait(waitMs).catch((error: Error) => {
    if (error instanceof MachineCrashedError || error instanceof GuestRebootedError) throw error;
    started.kill('KILL').catch(() => {});
    throw error;
  });
  return {
    status: exit.exitCode,
    timedOut: exit.timedOut,
    stdout: started.stdoutBytes,
    stderr: started.stderrBytes,
  };
}

/** Starts `command` in its own session and returns its handle at once; observers see it too. */
export async function spawnCommand(
  internals: MachineInternals,
  command: string,
  options: SpawnOptions,
): Promise<GuestProcess> {
  const watches = watchesOf(internals, command, 'spawn');
  for (const watch of watches) if (watch.before) await watch.before;
  const started = performance.now();
  const deliver = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
    for (const watch of watches) watch.output?.(stream, chunk);
  };
  const spawned = await GuestProcess.start(
    internals.agent,
    internals.name,
    command,
    { ...options, onStdout: deliver('stdout'), onStderr: deliver('stderr') },
    () => internals.console.tail(),
  );
  const ended = (outcome: Omit<CommandOutcome, 'durationMs'>) => {
    const durationMs = Math.round(performance.now() - started);
    for (const watch of watches) watch.ended?.({ durationMs, ...outcome });
  };
  spawned.exited.then(
    (exit) => ended({ exitCode: exit.exitCode, timedOut: exit.timedOut }),
    (error: Error) => ended({ error }),
  );
  return spawned;
}

function watchesOf(internals: MachineInternals, command: string, method: string): CommandWatch[] {
  return [...internals.commandObservers]
    .map((observe) => observe(command, method))
    .filter((watch): watch is CommandWatch => watch !== undefined);
}

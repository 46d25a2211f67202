import { CommandTimeoutError, GuestRebootedError, TimeoutError } from '../errors.js';
import { shellQuote } from '../util/shell.js';
import { sleep } from '../util/time.js';
import { checkCall } from './calls.js';
import type { ExecResult, WaitOptions } from './commands.js';

/** How often waitUntil* retries. */
const RETRY_INTERVAL_MS = 500;

/**
 * Runs a command again and again (every half second) until `done` says so or `timeoutMs` runs
 * out; the TimeoutError shows the last attempt. Each attempt gets what is left of the time, or
 * `attemptTimeoutMs` when that is less: a command that blocks is killed and tried again, and so
 * is one that a reboot of the guest killed.
 */
export async function retryCommand(
  run: (timeoutMs: number) => Promise<ExecResult>,
  awaited: string,
  done: (result: ExecResult) => boolean,
  timeoutMs: number,
  attemptTimeoutMs = timeoutMs,
): Promise<string> {
  const deadline = performance.now() + timeoutMs;
  let last: ExecResult | undefined;
  let attempts = 0;
  for (;;) {
    const remaining = deadline - performance.now();
    if (remaining <= 0) break;
    try {
      attempts++;
      last = await run(Math.max(1000, Math.round(Math.min(remaining, attemptTimeoutMs))));
      if (done(last)) return last.stdout;
    } catch (error) {
      // A reboot killed the attempt: the next one waits until the guest is back and set up.
      if (!(error instanceof CommandTimeoutError || error instanceof GuestRebootedError)) throw error;
    }
    if (deadline - performance.now() <= RETRY_INTERVAL_MS) break;
    await sleep(RETRY_INTERVAL_MS);
  }
  const lastState = last
    ? `${attempts} attempts; last attempt exited with status ${last.exitCode}; stdout: ${JSON.stringify(last.stdout.slice(-300))}; stderr: ${JSON.stringify(last.stderr.slice(-300))}`
    : `${attempts} attempts, none finished within its time`;
  throw new TimeoutError(awaited, timeoutMs, lastState);
}

/** What retryUntil asks of a machine. */
export interface RetryHost {
  readonly name: string;
  readonly commandTimeoutMs: number;
  execute(command: string, options: { timeoutMs: number }): Promise<ExecResult>;
}

/**
 * retryCommand of `command` on `machine` until it exits 0 (`succeeds`) or non-zero, with the
 * wait's options (default: the machine's command timeout).
 */
export async function retryUntil(
  machine: RetryHost,
  /** The method, for its argument check ('': checked by the caller). */
  method: string,
  command: string,
  succeeds: boolean,
  options: { timeoutMs?: number; attemptTimeoutMs?: number },
  awaited = `${JSON.stringify(command)} to ${succeeds ? 'succeed' : 'fail'}`,
): Promise<string> {
  if (method) checkCall(method, { command, waitOptions: options });
  const done = (result: ExecResult) => (result.exitCode === 0) === succeeds;
  const run = (attemptMs: number) => machine.execute(command, { timeoutMs: attemptMs });
  const timeoutMs = options.timeoutMs ?? machine.commandTimeoutMs;
  return retryCommand(run, `${awaited} on ${machine.name}`, done, timeoutMs, options.attemptTimeoutMs);
}

/** Waits until `path` exists in the guest. */
export async function waitForFile(machine: RetryHost, path: string, options: WaitOptions): Promise<void> {
  checkCall('waitForFile', { path, waitOptions: options });
  await retryUntil(machine, '', `test -e ${shellQuote(path)}`, true, options, `file ${path} to exist`);
}

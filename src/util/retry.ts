import { z } from 'zod';
import { ConfigError, TimeoutError } from '../errors.js';
import { MAX_TIMER_MS, sleep } from './time.js';
import { parseInput, waitOptionsOf, wholeNumber } from './validate.js';

export interface RetryOptions {
  /** The whole retry (default 60 s). */
  timeoutMs?: number;
  /** Each attempt: one that takes longer is abandoned (its signal aborts) and counts as failed. */
  attemptTimeoutMs?: number;
  /** Pause between attempts (default 500 ms). */
  intervalMs?: number;
  /** What is awaited, for the TimeoutError. */
  description?: string;
}

export interface Attempt {
  /** 1 for the first attempt. */
  number: number;
  /** Aborted when the attempt's time is up: pass it on to what the attempt waits for. */
  signal: AbortSignal;
}

const retryOptions = waitOptionsOf(
  {
    intervalMs: wholeNumber(0, MAX_TIMER_MS).optional(),
    description: z.string({ error: 'must be a string' }).optional(),
  },
  'must be an options object like { timeoutMs, attemptTimeoutMs, intervalMs, description }',
);

/**
 * Calls `attempt` until it returns something other than `false` (returned) or the time runs
 * out (TimeoutError showing the last failure). An attempt that throws, returns false or outlives
 * `attemptTimeoutMs` is tried again after `intervalMs`.
 */
export async function retry<T>(
  attempt: (attempt: Attempt) => Promise<T | false> | T | false,
  options: RetryOptions = {},
): Promise<T> {
  const checked = parseInput(retryOptions, options, 'retry: options');
  const timeoutMs = checked.timeoutMs ?? 60_000;
  const attemptTimeoutMs = checked.attemptTimeoutMs ?? timeoutMs;
  const intervalMs = checked.intervalMs ?? 500;
  if (attemptTimeoutMs > timeoutMs)
    throw new ConfigError(
      `retry: options: attemptTimeoutMs (${attemptTimeoutMs}) must not be larger than timeoutMs (default ${timeoutMs})`,
    );
  const deadline = performance.now() + timeoutMs;
  let lastFailure = 'no attempt finished';
  for (let number = 1; ; number++) {
    const remaining = deadline - performance.now();
    if (remaining <= 0) break;
    const controller = new AbortController();
    const limit = Math.min(remaining, attemptTimeoutMs);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((resolve) => {
      timer = setTimeout(() => resolve('expired'), limit);
    });
    const running = Promise.resolve().then(() => attempt({ number, signal: controller.signal }));
    running.catch(() => {}); // an abandoned attempt may still fail later
    try {
      const outcome = await Promise.race([running, expired]);
      if (outcome === 'expired') {
        lastFailure = `attempt ${number} did not finish within ${Math.round(limit)} ms`;
        controller.abort(new TimeoutError(`attempt ${number}`, Math.round(limit)));
      } else if (outcome !== false) return outcome as T;
      else lastFailure = `attempt ${number} returned false`;
    } catch (error) {
      lastFailure = `attempt ${number} failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`;
    } finally {
      clearTimeout(timer);
    }
    if (deadline - performance.now() <= intervalMs) break;
    await sleep(intervalMs);
  }
  throw new TimeoutError(options.description ?? 'retry to succeed', timeoutMs, lastFailure);
}

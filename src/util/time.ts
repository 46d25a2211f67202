import { AbortedError, TimeoutError } from '../errors.js';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Milliseconds since `start` (a performance.now() value), rounded. */
export const elapsedMs = (start: number) => Math.round(performance.now() - start);

/** The longest delay a Node timer takes; a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface DeadlineOptions {
  /** The error a timeout raises; by default a TimeoutError naming what was awaited. */
  onTimeout?: () => Error;
  /** Asked at expiry, so the TimeoutError shows the freshest evidence. */
  lastState?: () => string | undefined;
  consoleTail?: () => string | undefined;
  /** Aborting it ends the wait at once with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * The one way vmkit waits: `executor` starts the wait and returns its clean-up (listeners to
 * remove); the wait ends when it resolves or rejects, when `timeoutMs` runs out (TimeoutError
 * naming `awaited`, with the evidence asked for at that moment) or when `signal` aborts.
 * Clean-up runs exactly once, however it ends.
 */
export function waitWithin<T>(
  timeoutMs: number,
  awaited: string,
  executor: (resolve: (value: T) => void, reject: (error: Error) => void) => (() => void) | undefined,
  options: DeadlineOptions = {},
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let cleanup: (() => void) | undefined;
    const finish = () => {
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      cleanup?.();
    };
    const onAbort = () => fail(abortReason(options.signal, awaited));
    const succeed = (value: T) => {
      if (settled) return;
      finish();
      resolve(value);
    };
    const fail = (error: Error) => {
      if (settled) return;
      finish();
      reject(error);
    };
    const timer = setTimeout(
      () => {
        if (settled) return;
        fail(
          options.onTimeout?.() ??
            new TimeoutError(awaited, timeoutMs, options.lastState?.(), options.consoleTail?.()),
        );
      },
      Math.min(Math.max(timeoutMs, 0), MAX_TIMER_MS),
    );
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    let clean: (() => void) | undefined;
    try {
      clean = executor(succeed, fail);
    } catch (error) {
      fail(error instanceof Error ? error : new Error(String(error)));
    }
    if (settled) clean?.();
    else cleanup = clean;
  });
}

/** Races `promise` against a deadline: see waitWithin. */
export function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  awaited: string,
  options: DeadlineOptions = {},
): Promise<T> {
  return waitWithin<T>(
    timeoutMs,
    awaited,
    (resolve, reject) => {
      promise.then(resolve, reject);
      return undefined;
    },
    options,
  );
}

/** A point in time that several steps share: each step waits only for what is left. */
export class Deadline {
  private readonly at: number;

  constructor(
    readonly timeoutMs: number,
    readonly awaited: string,
  ) {
    this.at = performance.now() + timeoutMs;
  }

  /** Milliseconds left, never below zero. */
  remaining(): number {
    return Math.max(0, Math.round(this.at - performance.now()));
  }

  get expired(): boolean {
    return this.remaining() <= 0;
  }
}

function abortReason(signal: AbortSignal | undefined, awaited: string): Error {
  const reason: unknown = signal?.reason;
  if (reason instanceof Error && reason.name !== 'AbortError') return reason;
  return new AbortedError(`stopped waiting for ${awaited}: aborted`);
}

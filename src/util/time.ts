import { TimeoutError } from '../errors.js';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Races `promise` against a timer. On expiry throws a TimeoutError naming `awaited`;
 * `lastState` is asked for at that moment so the error shows the freshest evidence.
 */
export async function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  awaited: string,
  lastState?: () => string | undefined,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expiry = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(awaited, timeoutMs, lastState?.())), timeoutMs);
  });
  try {
    return await Promise.race([promise, expiry]);
  } finally {
    clearTimeout(timer);
  }
}

/** Milliseconds since `start` (a performance.now() value), rounded. */
export const elapsedMs = (start: number) => Math.round(performance.now() - start);

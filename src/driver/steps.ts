import type { Machine } from '../machine/machine.js';
import type { RunLog } from '../util/log.js';
import { elapsedMs } from '../util/time.js';
import type { RunRecorder } from './recorder.js';

/** Runs `body` and records it in the ledger as one step with its duration and outcome. */
export async function recordStep<T>(
  recorder: RunRecorder | undefined,
  step: { kind: string; name: string; machine?: string },
  body: () => Promise<T>,
): Promise<T> {
  const started = performance.now();
  try {
    const result = await body();
    recorder?.ledger.record({ ...step, durationMs: elapsedMs(started), outcome: 'ok' });
    return result;
  } catch (error) {
    const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
    recorder?.ledger.record({ ...step, durationMs: elapsedMs(started), outcome: 'failed', error: message });
    throw error;
  }
}

export function logConsoleTails(log: RunLog, machines: Machine[], error: Error): void {
  for (const machine of machines) {
    const consoleTail = machine.console.tail(1200).trimEnd();
    if (consoleTail && !error.message.includes(consoleTail.slice(-200))) {
      log.line('vmkit', `console tail of ${machine.name}:\n${consoleTail}`);
    }
  }
}

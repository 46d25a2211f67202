import { createInterface } from 'node:readline';
import type { Machine } from '../machine/machine.js';
import type { RunLog } from '../util/log.js';
import { openAttachPoints } from './attach.js';

export interface DebugWaitOptions {
  runId: string;
  /** How long to wait at most. */
  timeoutMs: number;
  log: RunLog;
  /** Resolves when a signal asks the wait to end (the CLI's SIGINT/SIGTERM). */
  interrupted: Promise<unknown>;
  input?: NodeJS.ReadStream;
}

/**
 * `--debug-on-failure`: keeps the failed test's machines alive, says how to reach them, and
 * waits for Enter (with a terminal), a signal, or the time limit; then the run cleans up as usual.
 */
export async function waitForDebugging(machines: Machine[], options: DebugWaitOptions): Promise<string> {
  const { log } = options;
  const closers = await Promise.all(machines.filter((m) => m.isRunning).map((m) => openAttachPoints(m)));
  log.line('debug', 'the test failed: its machines are kept running for debugging');
  for (const machine of machines) {
    log.line(
      'debug',
      `${machine.name}: vmkit attach ${options.runId} ${machine.name}   (root shell; add --console for the serial console)`,
    );
  }
  const input = options.input ?? process.stdin;
  const interactive = Boolean(input.isTTY);
  const minutes = Math.round(options.timeoutMs / 6000) / 10;
  log.line(
    'debug',
    interactive
      ? `press Enter to end, or wait ${minutes} min`
      : `no terminal: waiting for SIGINT or SIGTERM, or ${minutes} min`,
  );
  let timer: NodeJS.Timeout | undefined;
  const reader = interactive ? createInterface({ input }) : undefined;
  const reason = await Promise.race([
    new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve('the time limit passed'), options.timeoutMs);
    }),
    options.interrupted.then(() => 'a signal arrived'),
    ...(reader
      ? [new Promise<string>((resolve) => reader.once('line', () => resolve('Enter was pressed')))]
      : []),
  ]);
  clearTimeout(timer);
  reader?.close();
  await Promise.all(closers.map((close) => close()));
  log.line('debug', `${reason}: cleaning up`);
  return reason;
}

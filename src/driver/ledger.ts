import { closeSync, openSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** One step of a run, as one line of events.jsonl. */
export interface LedgerEvent {
  /** Wall-clock time the step started (ISO 8601). */
  time: string;
  /** Milliseconds from the start of the run to the start of the step. */
  at: number;
  /**
   * run, test, subtest, boot, restore, setup, snapshot, command, log, failure, console,
   * console-step (a wait, login, escalation or command on a serial console), diagnostics
   */
  kind: string;
  machine?: string;
  /** The test the step belongs to (suites), or the test's name. */
  test?: string;
  /** What the step was: a command, a test name, a log line. */
  name: string;
  durationMs?: number;
  outcome?: 'ok' | 'failed' | 'timeout' | 'interrupted';
  exitCode?: number;
  stdout?: string;
  stderr?: string;
  error?: string;
  /** Console tails by machine (failure), a console log (console), files written (diagnostics). */
  detail?: Record<string, string>;
}

/** How much of a command's output, a console log or an error the ledger keeps. */
export const LEDGER_LIMITS = { output: 8 * 1024, console: 64 * 1024, error: 8 * 1024 };

export const bounded = (text: string, limit: number) =>
  text.length > limit ? `[... ${text.length - limit} characters cut ...]\n${text.slice(-limit)}` : text;

/**
 * The run's ledger: every step as one JSON object a line in `<dir>/events.jsonl`, written with
 * synchronous writes so that what happened before a SIGINT or SIGTERM is on disk.
 */
export class Ledger {
  readonly path: string;
  private fd?: number;
  private readonly started = performance.now();
  private readonly startedAt = Date.now();
  /** The test steps now belong to, if any. */
  currentTest?: string;

  constructor(dir: string) {
    this.path = join(dir, 'events.jsonl');
    this.fd = openSync(this.path, 'w');
  }

  /** Milliseconds since the run started. */
  now(): number {
    return Math.round(performance.now() - this.started);
  }

  /** Records a step that started `durationMs` ago (or an instant, without a duration). */
  record(event: Omit<LedgerEvent, 'time' | 'at'> & { at?: number }): void {
    if (this.fd === undefined) return;
    const at = event.at ?? this.now() - (event.durationMs ?? 0);
    const line: LedgerEvent = {
      time: new Date(this.startedAt + at).toISOString(),
      at,
      ...(this.currentTest && !event.test ? { test: this.currentTest } : {}),
      ...event,
    };
    try {
      writeSync(this.fd, `${JSON.stringify(line)}\n`);
    } catch {
      // A full disk must not fail the test run; the report says the ledger is incomplete.
    }
  }

  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Reads a ledger back; a torn last line (the process was killed mid-write) is skipped. */
export async function readLedger(path: string): Promise<LedgerEvent[]> {
  const text = await readFile(path, 'utf8');
  const events: LedgerEvent[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      events.push(JSON.parse(line) as LedgerEvent);
    } catch {
      // skipped
    }
  }
  return events;
}

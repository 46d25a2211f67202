import { EventEmitter } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Socket } from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import { z } from 'zod';
import { ConfigError, describeValue, TimeoutError } from '../errors.js';
import { LineSplitter } from '../util/lines.js';
import { PRIVATE_FILE } from '../util/private.js';
import { waitWithin } from '../util/time.js';
import { parseInput, timeoutMs as timeoutSchema } from '../util/validate.js';
import { keyBytes } from './keys.js';
import { withoutKernelLines } from './matching.js';
import { ScreenModel } from './screen.js';
import type { ConsoleCommandRunner, ConsoleStepEvent } from './steps.js';
import { Transcript } from './transcript.js';

// CSI sequences, OSC sequences ended by BEL or ST, charset selection, and lone two-byte escapes.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching terminal control bytes is the point
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[@-Z\\-_]/g;
/** An escape sequence cut off at the end of a chunk: kept back until the next chunk completes it. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: as above
const PARTIAL_ESCAPE = /\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[()])?$/;

/** A guest that prints without newlines has its console cut into lines of this size. */
const MAX_LINE_BYTES = 64 * 1024;

/** A pattern as a regular expression without the global or sticky flags; a string matches literally. */
export function toRegExp(pattern: RegExp | string): RegExp {
  if (typeof pattern === 'string') return new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  if (pattern instanceof RegExp) return new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ''));
  throw new ConfigError(`expected a RegExp or a string to match console text, not ${describeValue(pattern)}`);
}

/** Removes terminal escape sequences and carriage returns, for matching and logs. */
export function stripAnsi(text: string): string {
  return text.replace(ANSI, '').replace(/\r/g, '');
}

const MAX_KEPT_CHARS = 4 * 1024 * 1024;

const expectOptions = z
  .object(
    {
      timeoutMs: timeoutSchema,
      on: z.enum(['any', 'stream'], { error: 'must be "any" or "stream"' }).optional(),
    },
    { error: 'must be an options object like { timeoutMs, on }' },
  )
  .strict();

export interface ExpectOptions {
  timeoutMs: number;
  /**
   * Where to look: the output stream and the screen (default), or the stream only (for prompts and
   * markers that must be new: a screen still shows what was printed before).
   */
  on?: 'any' | 'stream';
}

export interface ExpectMatch {
  /** Which of the patterns matched (0 for expect()). */
  index: number;
  pattern: RegExp | string;
  match: RegExpExecArray;
  /** Where it was found: the output stream, or the screen a full-screen program drew. */
  on: 'stream' | 'screen';
}

/**
 * A machine's serial console: everything it printed (kept in memory, bounded, and in a file),
 * a `line` event per line, a terminal emulator's view of the screen, a transcript of what was
 * sent and received, and expect-style waiting for text.
 */
export class SerialConsole extends EventEmitter<{
  line: [string];
  data: [string];
  step: [ConsoleStepEvent];
}> {
  private text = '';
  private dropped = 0;
  /** Where the next wait starts matching, as an absolute character offset. */
  private cursor = 0;
  /** The screen generation a screen match last consumed: the same screen never matches twice. */
  private screenSeen = -1;
  private held = '';
  private readonly decoder = new StringDecoder('utf8');
  private readonly lines = new LineSplitter(MAX_LINE_BYTES);
  private readonly file: WriteStream;
  private socket?: Socket;
  /** Steps being recorded now: the waits inside them are not steps of their own. */
  private recording = 0;
  readonly screen: ScreenModel;
  readonly transcript = new Transcript();
  /** Why the console's log file stopped being written, if it did. */
  fileError?: Error;
  /** The shell last opened on this console (machine.consoleShell()), for diagnostics. */
  shell?: ConsoleCommandRunner;

  constructor(logFile: string, size: { cols?: number; rows?: number } = {}) {
    super();
    // Each concurrent wait listens while it waits and stops when it settles: not a leak.
    this.setMaxListeners(0);
    this.file = createWriteStream(logFile, { flags: 'a', mode: PRIVATE_FILE });
    // The file is a copy of what the console keeps in memory: losing it (a full disk, a state
    // folder removed at close before a late open) must not end the process that drives the machine.
    this.file.on('error', (error) => {
      this.fileError ??= error;
    });
    this.screen = new ScreenModel(size.cols, size.rows);
  }

  /** Takes in output the guest printed before this console existed (the saved boot of a restore). */
  replay(output: Buffer): void {
    this.onData(output);
  }

  attach(socket: Socket): void {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  private onData(chunk: Buffer): void {
    this.file.write(chunk);
    const decoded = this.held + this.decoder.write(chunk);
    const partial = PARTIAL_ESCAPE.exec(decoded);
    this.held = partial && partial[0].length < 256 ? partial[0] : '';
    const clean = stripAnsi(this.held ? decoded.slice(0, -this.held.length) : decoded);
    this.text += clean;
    if (this.text.length > MAX_KEPT_CHARS) {
      const cut = this.text.length - MAX_KEPT_CHARS / 2;
      this.text = this.text.slice(cut);
      this.dropped += cut;
    }
    this.transcript.received(clean);
    this.screen.write(chunk, () => this.emit('data', clean));
    this.lines.push(chunk, (line) => this.emit('line', stripAnsi(line.toString('utf8'))));
  }

  /** All console output kept so far, escape sequences removed. */
  get log(): string {
    return this.text;
  }

  tail(maxChars = 3000): string {
    return this.text.slice(-maxChars);
  }

  /** The screen as a terminal would show it now (80x24 unless the machine says otherwise). */
  screenText(): string {
    return this.screen.text();
  }

  /** Counts everything printed so far as seen: later waits match only what comes after. */
  consume(): void {
    this.cursor = this.dropped + this.text.length;
    this.screenSeen = this.screen.generation;
  }

  /** Types text on the console, as is (no Enter added). */
  send(text: string | Buffer): void {
    if (typeof text !== 'string' && !Buffer.isBuffer(text)) {
      throw new ConfigError(`console.send takes a string or a Buffer, not ${describeValue(text)}`);
    }
    this.transcript.sent(text.toString());
    this.socket?.write(text);
  }

  /**
   * Resolves once the console has printed nothing for `quietMs` (a full-screen program has finished
   * drawing), or after `timeoutMs` whatever happens.
   */
  settle(quietMs: number, timeoutMs = 30_000): Promise<void> {
    return new Promise((resolve) => {
      let quiet: NodeJS.Timeout;
      const done = () => {
        clearTimeout(quiet);
        clearTimeout(limit);
        this.off('data', restart);
        resolve();
      };
      const restart = () => {
        clearTimeout(quiet);
        quiet = setTimeout(done, quietMs);
      };
      const limit = setTimeout(done, timeoutMs);
      this.on('data', restart);
      restart();
    });
  }

  /**
   * Types text one character at a time, `perCharMs` apart: for guests whose input buffer is small
   * (firmware and boot loaders drop what arrives faster than they read).
   */
  async type(text: string, perCharMs = 20): Promise<void> {
    for (const char of text) await this.pressAndWait(char, perCharMs);
  }

  /**
   * Sends bytes, then waits until the guest answers with any output (its echo or redraw), at most
   * 3 s, and until it has then been quiet for `afterMs`: the pace of a person watching the screen.
   */
  async pressAndWait(bytes: string, afterMs: number): Promise<void> {
    let onData = () => {};
    const answered = new Promise<void>((resolve) => {
      onData = () => resolve();
      this.on('data', onData);
      setTimeout(resolve, 3_000);
    });
    this.send(bytes);
    await answered;
    this.off('data', onData);
    await this.settle(afterMs, 3_000);
  }

  /** Types text, then Enter. */
  sendLine(text: string): void {
    this.send(`${text}\r`);
  }

  /** Presses a key by name: "enter", "up", "f10", "ctrl-c", "esc", ... */
  sendKey(key: string): void {
    this.send(keyBytes(key));
  }

  /**
   * Waits until `pattern` matches console output not consumed by an earlier wait, then moves
   * past the match. Output from before the call counts: a prompt printed a moment ago is found.
   * A string matches literally. Only the output stream is searched (see expect() for screens).
   */
  async waitForText(pattern: RegExp | string, timeoutMs: number): Promise<RegExpExecArray> {
    parseInput(timeoutSchema, timeoutMs, 'console.waitForText: timeoutMs');
    const regex = toRegExp(pattern);
    return waitWithin<RegExpExecArray>(
      timeoutMs,
      `console text matching ${pattern}`,
      (resolve) => this.watch(() => this.searchStream(regex), resolve),
      { consoleTail: () => this.tail(1500) },
    );
  }

  /**
   * Waits for `pattern` in what a person would read: the output stream (escapes and kernel
   * messages removed), or the screen a full-screen program has drawn. The timeout error shows
   * the last screen and what was awaited.
   */
  async expect(pattern: RegExp | string, options: ExpectOptions): Promise<ExpectMatch> {
    return this.expectAny([pattern], options);
  }

  /** Waits for the first of `patterns` to match (as expect()); says which one did. */
  async expectAny(patterns: Array<RegExp | string>, options: ExpectOptions): Promise<ExpectMatch> {
    if (!Array.isArray(patterns) || patterns.length === 0) {
      throw new ConfigError(
        `console.expectAny takes a non-empty list of patterns, not ${describeValue(patterns)}`,
      );
    }
    const regexes = patterns.map(toRegExp);
    parseInput(expectOptions, options, 'console.expect: options');
    const awaited = patterns.length === 1 ? `${patterns[0]}` : `any of ${patterns.join(', ')}`;
    if (this.recording > 0) return this.awaitAny(patterns, regexes, awaited, options);
    return this.recordStep(
      'expect',
      awaited,
      () => this.awaitAny(patterns, regexes, awaited, options),
      (found) => ({ output: found.match[0] }),
    );
  }

  private async awaitAny(
    patterns: Array<RegExp | string>,
    regexes: RegExp[],
    awaited: string,
    options: ExpectOptions,
  ): Promise<ExpectMatch> {
    const { timeoutMs } = options;
    const found = (): ExpectMatch | undefined => {
      for (const [index, regex] of regexes.entries()) {
        const match = this.searchStream(regex);
        if (!match) continue;
        this.screenSeen = this.screen.generation; // the screen as it is now has been seen too
        return { index, pattern: patterns[index] as RegExp | string, match, on: 'stream' };
      }
      if (options.on === 'stream' || this.screen.generation === this.screenSeen) return undefined;
      const screen = this.screen.text();
      for (const [index, regex] of regexes.entries()) {
        const match = regex.exec(screen);
        if (!match) continue;
        this.screenSeen = this.screen.generation;
        this.cursor = this.dropped + this.text.length; // what led to this screen is seen too
        return { index, pattern: patterns[index] as RegExp | string, match, on: 'screen' };
      }
      return undefined;
    };
    await this.screen.settled();
    try {
      return await waitWithin<ExpectMatch>(timeoutMs, `console text ${awaited}`, (resolve) =>
        this.watch(found, resolve),
      );
    } catch (error) {
      if (!(error instanceof TimeoutError)) throw error;
      throw new TimeoutError(
        `console text ${awaited}`,
        timeoutMs,
        `the screen:\n${indent(this.screen.text())}`,
        this.tail(1500),
      );
    }
  }

  /**
   * Runs `body` as one step of the console session and emits a `step` event when it ends (the
   * run's ledger records them), with what `describe` makes of its result.
   */
  async recordStep<T>(
    step: ConsoleStepEvent['step'],
    name: string,
    body: () => Promise<T>,
    describe: (result: T) => Partial<ConsoleStepEvent> = () => ({}),
  ): Promise<T> {
    const started = performance.now();
    const durationMs = () => Math.round(performance.now() - started);
    this.recording++;
    try {
      const result = await body();
      this.recording--;
      this.emit('step', { step, name, durationMs: durationMs(), outcome: 'ok', ...describe(result) });
      return result;
    } catch (error) {
      this.recording--;
      const outcome = error instanceof TimeoutError ? 'timeout' : 'failed';
      const message = error instanceof Error ? error.message : String(error);
      this.emit('step', { step, name, durationMs: durationMs(), outcome, error: message });
      throw error;
    }
  }

  /** Calls `resolve` with what `search` finds now or after later output; returns the unsubscribe. */
  private watch<T>(
    search: () => T | undefined | null,
    resolve: (value: T) => void,
  ): (() => void) | undefined {
    const first = search();
    if (first) {
      resolve(first);
      return undefined;
    }
    const onData = () => {
      const match = search();
      if (match) resolve(match);
    };
    this.on('data', onData);
    return () => this.off('data', onData);
  }

  /** Searches the unconsumed output, kernel messages left out; moves past a match. */
  private searchStream(regex: RegExp): RegExpExecArray | null {
    const start = Math.max(0, this.cursor - this.dropped);
    const view = withoutKernelLines(this.text.slice(start));
    const match = regex.exec(view.text);
    if (match) this.cursor = this.dropped + start + view.original(match.index + match[0].length);
    return match;
  }

  close(): void {
    this.file.end();
    this.screen.dispose();
  }
}

const indent = (text: string) =>
  text
    .split('\n')
    .map((line) => `  | ${line}`)
    .join('\n');

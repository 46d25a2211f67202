import { EventEmitter } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Socket } from 'node:net';
import { ConfigError, describeValue } from '../errors.js';
import { LineSplitter } from '../util/lines.js';
import { waitWithin } from '../util/time.js';

// CSI sequences, OSC sequences ended by BEL or ST, charset selection, and lone two-byte escapes.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching terminal control bytes is the point
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[@-Z\\-_]/g;

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

/**
 * A machine's serial console: everything it printed (kept in memory, bounded, and in a file),
 * a `line` event per line, and expect-style waiting for text.
 */
export class SerialConsole extends EventEmitter<{ line: [string]; data: [string] }> {
  private text = '';
  private dropped = 0;
  /** Where the next waitForText starts matching, as an absolute character offset. */
  private cursor = 0;
  private readonly lines = new LineSplitter(MAX_LINE_BYTES);
  private readonly file: WriteStream;
  private socket?: Socket;

  constructor(logFile: string) {
    super();
    this.file = createWriteStream(logFile, { flags: 'a' });
  }

  attach(socket: Socket): void {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  private onData(chunk: Buffer): void {
    this.file.write(chunk);
    const clean = stripAnsi(chunk.toString('utf8'));
    this.text += clean;
    if (this.text.length > MAX_KEPT_CHARS) {
      const cut = this.text.length - MAX_KEPT_CHARS / 2;
      this.text = this.text.slice(cut);
      this.dropped += cut;
    }
    this.emit('data', clean);
    this.lines.push(chunk, (line) => this.emit('line', stripAnsi(line.toString('utf8'))));
  }

  /** All console output kept so far, escape sequences removed. */
  get log(): string {
    return this.text;
  }

  tail(maxChars = 3000): string {
    return this.text.slice(-maxChars);
  }

  send(text: string | Buffer): void {
    this.socket?.write(text);
  }

  /**
   * Waits until `pattern` matches console output not consumed by an earlier wait, then moves
   * past the match. Output from before the call counts: a prompt printed a moment ago is found.
   * A string matches literally.
   */
  waitForText(pattern: RegExp | string, timeoutMs: number): Promise<RegExpExecArray> {
    const regex = toRegExp(pattern);
    const search = () => {
      const start = Math.max(0, this.cursor - this.dropped);
      const match = regex.exec(this.text.slice(start));
      if (match) this.cursor = this.dropped + start + match.index + match[0].length;
      return match;
    };
    return waitWithin<RegExpExecArray>(
      timeoutMs,
      `console text matching ${pattern}`,
      (resolve) => {
        const onData = () => {
          const match = search();
          if (match) resolve(match);
        };
        const found = search();
        if (found) {
          resolve(found);
          return undefined;
        }
        this.on('data', onData);
        return () => this.off('data', onData);
      },
      { consoleTail: () => this.tail(1500) },
    );
  }

  close(): void {
    this.file.end();
  }
}

/**
 * Screens and keyboards, added to Machine's prototype (see machine-systemd.ts for why):
 * screenshots (QMP screendump, PPM to PNG), keys (QMP send-key), virtual terminal text from
 * /dev/vcsa<n>, and OCR with the host's tesseract.
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { requireCapability } from '../backends/backend.js';
import {
  CommandTimeoutError,
  ConfigError,
  GuestRebootedError,
  HostToolError,
  TimeoutError,
} from '../errors.js';
import { runTool } from '../util/exec.js';
import { ensureDir } from '../util/files.js';
import { Deadline, sleep } from '../util/time.js';
import { checkCall } from './calls.js';
import { charKeys, keyCombo } from './keys.js';
import { Machine, type WaitOptions } from './machine.js';
import { checkTty, ppmFileToPng, vcsaText } from './screen.js';

declare module './machine.js' {
  interface Machine {
    /** Writes the screen as a PNG file (needs display: true). */
    screenshot(path: string): Promise<void>;
    /** Presses a key or a combination, e.g. "ctrl-alt-delete", "alt-f2", "ret". */
    sendKey(key: string): Promise<void>;
    /** Types text on the keyboard (US layout; printable ASCII, newline and tab). */
    sendChars(text: string): Promise<void>;
    /** The text on virtual terminal `tty` (1-63), read from /dev/vcsa<tty> without OCR. */
    getTtyText(tty: number): Promise<string>;
    /** Waits until the text on virtual terminal `tty` matches `pattern`; returns the match. */
    waitUntilTtyMatches(tty: number, pattern: RegExp, options?: WaitOptions): Promise<RegExpExecArray>;
    /** The screen's text by OCR (the host's tesseract). */
    getScreenText(): Promise<string>;
    /** Waits until OCR of the screen matches `pattern`, backing off between attempts. */
    waitForText(pattern: RegExp, options?: WaitOptions): Promise<RegExpExecArray>;
  }
}

/** Between keys: QEMU's PS/2 queue is short, and a guest under emulation reads it slowly. */
const KEY_GAP_MS = 15;
const TTY_POLL_MS = 500;
const OCR_FIRST_BACKOFF_MS = 500;
const OCR_MAX_BACKOFF_MS = 8000;

function requireDisplay(machine: Machine, method: string): void {
  requireCapability(machine.backend, 'display');
  if (!machine.config.display) {
    throw new ConfigError(`${method}: machine ${machine.name} has no display (start it with display: true)`);
  }
}

function checkPattern(method: string, pattern: unknown): RegExp {
  if (!(pattern instanceof RegExp)) throw new ConfigError(`${method}: pattern: must be a RegExp`);
  return pattern;
}

/** How long a QMP request or an OCR run may take outside of a wait. */
const DEFAULT_STEP_MS = 60_000;

async function pngOfScreen(machine: Machine, timeoutMs = DEFAULT_STEP_MS): Promise<Buffer> {
  const ppm = join(machine.stateDir, `screen-${randomBytes(4).toString('hex')}.ppm`);
  try {
    await machine.qmp.execute('screendump', { filename: ppm }, timeoutMs);
    return await ppmFileToPng(ppm);
  } finally {
    await rm(ppm, { force: true });
  }
}

/** The screen's text by tesseract; screendump and OCR together take at most `timeoutMs`. */
async function ocr(machine: Machine, timeoutMs = DEFAULT_STEP_MS): Promise<string> {
  const png = join(machine.stateDir, `ocr-${randomBytes(4).toString('hex')}.png`);
  const limit = new Deadline(timeoutMs, 'OCR of the screen');
  try {
    await writeFile(png, await pngOfScreen(machine, timeoutMs));
    const left = Math.max(1, limit.remaining());
    return (await runTool('tesseract', [png, 'stdout'], { timeoutMs: left })).stdout;
  } catch (error) {
    if (error instanceof HostToolError && /cannot run tesseract/.test(error.message)) {
      throw new HostToolError(
        'OCR needs tesseract on the host, and it is not installed: apt-get install tesseract-ocr',
      );
    }
    throw error;
  } finally {
    await rm(png, { force: true });
  }
}

async function readTty(machine: Machine, method: string, tty: number, timeoutMs?: number): Promise<string> {
  const raw = await machine.executeRaw(`cat /dev/vcsa${tty}`, timeoutMs === undefined ? {} : { timeoutMs });
  if (raw.status !== 0) {
    throw new ConfigError(
      `${method}: ${machine.name} has no /dev/vcsa${tty}: ${raw.stderr.toString().trim()}`,
    );
  }
  return vcsaText(raw.stdout);
}

/**
 * Reads something until it matches `pattern`, within the wait's `timeoutMs`; each read gets what
 * is left, or `attemptTimeoutMs` when that is less, and one that runs out of its time (`timedOut`
 * says which errors mean that) is tried again. Pauses between reads as `pauses` says.
 */
async function readUntilMatch(
  read: (timeoutMs: number) => Promise<string>,
  pattern: RegExp,
  wait: { timeoutMs: number; attemptTimeoutMs?: number; awaited: string; shown: string },
  timedOut: (error: unknown) => boolean,
  pauses: (attempt: number) => number,
): Promise<RegExpExecArray> {
  const deadline = new Deadline(wait.timeoutMs, wait.awaited);
  const attemptMs = wait.attemptTimeoutMs ?? wait.timeoutMs;
  const regex = new RegExp(pattern.source, pattern.flags.replace('g', ''));
  let evidence = 'no read finished';
  for (let attempt = 1; !deadline.expired; attempt++) {
    const limit = Math.max(1, Math.min(deadline.remaining(), attemptMs));
    try {
      const text = await read(limit);
      const match = regex.exec(text);
      if (match) return match;
      evidence = `${wait.shown}:\n${text}`;
    } catch (error) {
      if (!timedOut(error)) throw error;
      evidence = `attempt ${attempt} did not finish within ${limit} ms`;
    }
    const pause = pauses(attempt);
    if (deadline.remaining() <= pause) break;
    await sleep(pause);
  }
  throw new TimeoutError(wait.awaited, wait.timeoutMs, evidence);
}

const methods: ThisType<Machine> & Partial<Machine> = {
  async screenshot(path) {
    if (typeof path !== 'string' || path === '')
      throw new ConfigError('screenshot: path: must be a file path');
    requireDisplay(this, 'screenshot');
    const png = await pngOfScreen(this);
    await ensureDir(dirname(path));
    await writeFile(path, png);
  },

  async sendKey(key) {
    const codes = keyCombo(key);
    requireDisplay(this, 'sendKey');
    await this.qmp.execute('send-key', { keys: codes.map((data) => ({ type: 'qcode', data })) });
  },

  async sendChars(text) {
    if (typeof text !== 'string') throw new ConfigError('sendChars: text: must be a string');
    const presses = [...text].map(charKeys); // every character checked before the first is typed
    requireDisplay(this, 'sendChars');
    for (const keys of presses) {
      await this.qmp.execute('send-key', { keys: keys.map((data) => ({ type: 'qcode', data })) });
      await sleep(KEY_GAP_MS);
    }
  },

  async getTtyText(tty) {
    return readTty(this, 'getTtyText', checkTty('getTtyText', tty));
  },

  async waitUntilTtyMatches(tty, pattern, options = {}) {
    const call = checkCall('waitUntilTtyMatches', { waitOptions: options });
    const n = checkTty('waitUntilTtyMatches', tty);
    checkPattern('waitUntilTtyMatches', pattern);
    const timeoutMs = call.timeoutMs ?? this.commandTimeoutMs;
    return readUntilMatch(
      (limit) => readTty(this, 'waitUntilTtyMatches', n, limit),
      pattern,
      {
        timeoutMs,
        attemptTimeoutMs: call.attemptTimeoutMs,
        awaited: `tty${n} of ${this.name} to match ${pattern}`,
        shown: `tty${n} shows`,
      },
      // A reboot under the wait: the next read waits until the guest is back.
      (error) => error instanceof CommandTimeoutError || error instanceof GuestRebootedError,
      () => TTY_POLL_MS,
    );
  },

  async getScreenText() {
    requireDisplay(this, 'getScreenText');
    return ocr(this);
  },

  async waitForText(pattern, options = {}) {
    const call = checkCall('waitForText', { waitOptions: options });
    checkPattern('waitForText', pattern);
    requireDisplay(this, 'waitForText');
    const timeoutMs = call.timeoutMs ?? this.commandTimeoutMs;
    return readUntilMatch(
      (limit) => ocr(this, limit),
      pattern,
      {
        timeoutMs,
        attemptTimeoutMs: call.attemptTimeoutMs,
        awaited: `screen text of ${this.name} to match ${pattern}`,
        shown: 'OCR read',
      },
      // The screendump's QMP reply or tesseract outran the attempt's time.
      (error) =>
        error instanceof TimeoutError ||
        (error instanceof HostToolError && /did not finish within/.test(error.message)),
      (attempt) => Math.min(OCR_FIRST_BACKOFF_MS * 2 ** (attempt - 1), OCR_MAX_BACKOFF_MS),
    );
  },
};
Object.assign(Machine.prototype, methods);

/**
 * Screens and keyboards, added to Machine's prototype (see machine-systemd.ts for why):
 * screenshots (QMP screendump, PPM to PNG), keys (QMP send-key), virtual terminal text from
 * /dev/vcsa<n>, and OCR with the host's tesseract.
 */
import { rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { requireCapability } from '../backends/backend.js';
import { ConfigError, GuestRebootedError, HostToolError, TimeoutError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { ensureDir } from '../util/files.js';
import { sleep } from '../util/time.js';
import { charKeys, keyCombo } from './keys.js';
import { type CommandOptions, Machine } from './machine.js';
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
    waitUntilTtyMatches(tty: number, pattern: RegExp, options?: CommandOptions): Promise<RegExpExecArray>;
    /** The screen's text by OCR (the host's tesseract). */
    getScreenText(): Promise<string>;
    /** Waits until OCR of the screen matches `pattern`, backing off between attempts. */
    waitForText(pattern: RegExp, options?: CommandOptions): Promise<RegExpExecArray>;
  }
}

/** Between keys: QEMU's PS/2 queue is short, and a guest under emulation reads it slowly. */
const KEY_GAP_MS = 15;
const TTY_POLL_MS = 500;
const OCR_FIRST_BACKOFF_MS = 500;
const OCR_MAX_BACKOFF_MS = 8000;
let screenshots = 0;

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

async function pngOfScreen(machine: Machine): Promise<Buffer> {
  const ppm = join(machine.stateDir, `screen-${process.pid}-${screenshots++}.ppm`);
  try {
    await machine.qmp.execute('screendump', { filename: ppm });
    return await ppmFileToPng(ppm);
  } finally {
    await rm(ppm, { force: true });
  }
}

async function ocr(machine: Machine): Promise<string> {
  const png = join(machine.stateDir, `ocr-${process.pid}-${screenshots++}.png`);
  try {
    await writeFile(png, await pngOfScreen(machine));
    return (await runTool('tesseract', [png, 'stdout'], { timeoutMs: 60_000 })).stdout;
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
    const n = checkTty('getTtyText', tty);
    const raw = await this.executeRaw(`cat /dev/vcsa${n}`);
    if (raw.status !== 0) {
      throw new ConfigError(`getTtyText: ${this.name} has no /dev/vcsa${n}: ${raw.stderr.toString().trim()}`);
    }
    return vcsaText(raw.stdout);
  },

  async waitUntilTtyMatches(tty, pattern, options = {}) {
    checkTty('waitUntilTtyMatches', tty);
    checkPattern('waitUntilTtyMatches', pattern);
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    const deadline = performance.now() + timeoutMs;
    let text = '';
    for (;;) {
      // A reboot under the wait: the next read waits until the guest is back.
      text = await this.getTtyText(tty).catch((error: Error) => {
        if (error instanceof GuestRebootedError) return '';
        throw error;
      });
      const match = new RegExp(pattern.source, pattern.flags.replace('g', '')).exec(text);
      if (match) return match;
      if (performance.now() + TTY_POLL_MS > deadline) break;
      await sleep(TTY_POLL_MS);
    }
    throw new TimeoutError(
      `tty${tty} of ${this.name} to match ${pattern}`,
      timeoutMs,
      `tty${tty} shows:\n${text}`,
    );
  },

  async getScreenText() {
    requireDisplay(this, 'getScreenText');
    return ocr(this);
  },

  async waitForText(pattern, options = {}) {
    checkPattern('waitForText', pattern);
    requireDisplay(this, 'waitForText');
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    const deadline = performance.now() + timeoutMs;
    let backoff = OCR_FIRST_BACKOFF_MS;
    let text = '';
    for (;;) {
      text = await ocr(this);
      const match = new RegExp(pattern.source, pattern.flags.replace('g', '')).exec(text);
      if (match) return match;
      if (performance.now() + backoff > deadline) break;
      await sleep(backoff);
      backoff = Math.min(backoff * 2, OCR_MAX_BACKOFF_MS);
    }
    throw new TimeoutError(
      `screen text of ${this.name} to match ${pattern}`,
      timeoutMs,
      `OCR read:\n${text}`,
    );
  },
};
Object.assign(Machine.prototype, methods);

/**
 * The screen and keyboard part of a Machine: screenshots (QMP screendump, PPM to PNG), keys (QMP
 * send-key), virtual terminal text from /dev/vcsa<n>, and OCR with the host's tesseract. Machine
 * (machine.ts) holds one and delegates to it.
 */
import { rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { RawResult } from '../agent/backdoor.js';
import { type Backend, requireCapability, type Vmm } from '../backends/backend.js';
import {
  CapabilityError,
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
import type { ExecuteOptions, WaitOptions } from './commands.js';
import type { MachineConfig } from './config.js';
import { charKeys, keyCombo } from './keys.js';
import { checkTty, ppmFileToPng, vcsaText } from './screen.js';

/** What the display part asks of the machine it belongs to. */
export interface DisplayHost {
  readonly name: string;
  readonly stateDir: string;
  readonly config: MachineConfig;
  readonly backend: Backend;
  readonly commandTimeoutMs: number;
  executeRaw(command: string, options?: ExecuteOptions): Promise<RawResult>;
}

/** Between keys: QEMU's PS/2 queue is short, and a guest under emulation reads it slowly. */
const KEY_GAP_MS = 15;
const TTY_POLL_MS = 500;
const OCR_FIRST_BACKOFF_MS = 500;
const OCR_MAX_BACKOFF_MS = 8000;

function requireDisplay(machine: DisplayHost, method: string): void {
  requireCapability(machine.backend, 'display');
  if (!machine.config.display) {
    throw new ConfigError(`${method}: machine ${machine.name} has no display (start it with display: true)`);
  }
}

/** The VMM's screen: its screendump and keyboard, which every backend with a display has. */
interface Screen {
  screendump(path: string, timeoutMs: number): Promise<void>;
  sendKeys(keys: string[]): Promise<void>;
}

function screenOf(backend: Backend, vmm: Vmm): Screen {
  if (!vmm.screendump || !vmm.sendKeys) throw new CapabilityError(backend.title, 'display');
  return { screendump: vmm.screendump.bind(vmm), sendKeys: vmm.sendKeys.bind(vmm) };
}

function checkPattern(method: string, pattern: unknown): RegExp {
  if (!(pattern instanceof RegExp)) throw new ConfigError(`${method}: pattern: must be a RegExp`);
  return pattern;
}

/** How long a QMP request or an OCR run may take outside of a wait. */
const DEFAULT_STEP_MS = 60_000;

async function pngOfScreen(screen: Screen, ppm: string, timeoutMs = DEFAULT_STEP_MS): Promise<Buffer> {
  try {
    await screen.screendump(ppm, timeoutMs);
    return await ppmFileToPng(ppm);
  } finally {
    await rm(ppm, { force: true });
  }
}

/** The screen's text by tesseract; screendump and OCR together take at most `timeoutMs`. */
async function ocr(screen: Screen, files: string, timeoutMs = DEFAULT_STEP_MS): Promise<string> {
  const png = `${files}.png`;
  const limit = new Deadline(timeoutMs, 'OCR of the screen');
  try {
    await writeFile(png, await pngOfScreen(screen, `${files}.ppm`, timeoutMs));
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

async function readTty(
  machine: DisplayHost,
  method: string,
  tty: number,
  timeoutMs?: number,
): Promise<string> {
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

export class MachineDisplay {
  /** Numbers the scratch files of screendumps and OCR runs in the machine's folder. */
  private files = 0;

  constructor(
    private readonly host: DisplayHost,
    private readonly vmm: () => Vmm,
  ) {}

  private screen(): Screen {
    return screenOf(this.host.backend, this.vmm());
  }

  /** A scratch file name in the machine's folder, without its extension. */
  private scratch(kind: 'screen' | 'ocr'): string {
    return join(this.host.stateDir, `${kind}-${this.files++}`);
  }

  async screenshot(path: string): Promise<void> {
    if (typeof path !== 'string' || path === '')
      throw new ConfigError('screenshot: path: must be a file path');
    requireDisplay(this.host, 'screenshot');
    const png = await pngOfScreen(this.screen(), `${this.scratch('screen')}.ppm`);
    await ensureDir(dirname(path));
    await writeFile(path, png);
  }

  async sendKey(key: string): Promise<void> {
    const codes = keyCombo(key);
    requireDisplay(this.host, 'sendKey');
    await this.screen().sendKeys(codes);
  }

  async sendChars(text: string): Promise<void> {
    if (typeof text !== 'string') throw new ConfigError('sendChars: text: must be a string');
    const presses = [...text].map(charKeys); // every character checked before the first is typed
    requireDisplay(this.host, 'sendChars');
    for (const keys of presses) {
      await this.screen().sendKeys(keys);
      await sleep(KEY_GAP_MS);
    }
  }

  async getTtyText(tty: number): Promise<string> {
    return readTty(this.host, 'getTtyText', checkTty('getTtyText', tty));
  }

  async waitUntilTtyMatches(
    tty: number,
    pattern: RegExp,
    options: WaitOptions = {},
  ): Promise<RegExpExecArray> {
    const call = checkCall('waitUntilTtyMatches', { waitOptions: options });
    const n = checkTty('waitUntilTtyMatches', tty);
    checkPattern('waitUntilTtyMatches', pattern);
    const timeoutMs = call.timeoutMs ?? this.host.commandTimeoutMs;
    return readUntilMatch(
      (limit) => readTty(this.host, 'waitUntilTtyMatches', n, limit),
      pattern,
      {
        timeoutMs,
        attemptTimeoutMs: call.attemptTimeoutMs,
        awaited: `tty${n} of ${this.host.name} to match ${pattern}`,
        shown: `tty${n} shows`,
      },
      // A reboot under the wait: the next read waits until the guest is back.
      (error) => error instanceof CommandTimeoutError || error instanceof GuestRebootedError,
      () => TTY_POLL_MS,
    );
  }

  async getScreenText(): Promise<string> {
    requireDisplay(this.host, 'getScreenText');
    return ocr(this.screen(), this.scratch('ocr'));
  }

  async waitForText(pattern: RegExp, options: WaitOptions = {}): Promise<RegExpExecArray> {
    const call = checkCall('waitForText', { waitOptions: options });
    checkPattern('waitForText', pattern);
    requireDisplay(this.host, 'waitForText');
    const timeoutMs = call.timeoutMs ?? this.host.commandTimeoutMs;
    return readUntilMatch(
      (limit) => ocr(this.screen(), this.scratch('ocr'), limit),
      pattern,
      {
        timeoutMs,
        attemptTimeoutMs: call.attemptTimeoutMs,
        awaited: `screen text of ${this.host.name} to match ${pattern}`,
        shown: 'OCR read',
      },
      // The screendump's QMP reply or tesseract outran the attempt's time.
      (error) =>
        error instanceof TimeoutError ||
        (error instanceof HostToolError && /did not finish within/.test(error.message)),
      (attempt) => Math.min(OCR_FIRST_BACKOFF_MS * 2 ** (attempt - 1), OCR_MAX_BACKOFF_MS),
    );
  }
}

/**
 * The backdoor wire format (see guest/agent/main.c): one request line from the host, one
 * framed reply from the guest. Payloads travel as base64 so any bytes survive the tty.
 */

import { LineSplitter } from '../util/lines.js';

/** What a command in the guest gave back: its exit status and its output, as bytes. */
export interface RawResult {
  status: number;
  /** The guest killed the command when its timeout ran out. */
  timedOut: boolean;
  stdout: Buffer;
  stderr: Buffer;
}

export const BANNER = 'Spawning backdoor root shell...';

export type BackdoorEvent =
  | { type: 'banner' }
  | { type: 'reply'; id: number; status: number; timedOut: boolean; stdout: Buffer; stderr: Buffer }
  | { type: 'go'; id: number }
  | { type: 'send'; id: number; size: number }
  /** Output of a started process, as it is produced. */
  | { type: 'output'; id: number; stream: 'stdout' | 'stderr'; data: Buffer }
  /** A started process exited, and all of its output was sent before this. */
  | { type: 'exit'; id: number; status: number; timedOut: boolean }
  | { type: 'noise'; line: string };

/** What travels whole on a request line: one line, no NUL or CR, no blanks at either end. */
const ONE_LINE = /^[^\s\0](?:[^\n\r\0]*[^\s\0])?$/;

const b64 = (text: string | Buffer) => Buffer.from(text).toString('base64');

/** What the agent sets in a restored guest itself (request T), without starting a process. */
export interface GuestIdentity {
  /** A new hostname; absent: the guest keeps its own. Never empty. */
  hostname?: string;
  /** Also write the hostname to /etc/hostname and on 127.0.1.1 in /etc/hosts (systemd guests). */
  hostnameFiles: boolean;
  /** Fresh randomness, mixed into the kernel's pool and credited. */
  entropy: Buffer;
  /**
   * A new /etc/machine-id (32 lowercase hex digits), with the persistent journal kept in view
   * under it (systemd guests); absent: the guest keeps its own.
   */
  machineId?: string;
}

/** How an agent that does not know a request answers it: status 2 and this on stderr. */
export const UNKNOWN_REQUEST = /^vmkit backdoor: unknown request '/;

export const encodeRequest = {
  /** The guest's watchdog counts whole seconds: `timeoutSeconds` must be a whole number >= 1. */
  run: (id: number, script: string, timeoutSeconds: number) => {
    // A one-line script travels on the request line itself: fewer bytes and no length to count.
    if (ONE_LINE.test(script) && Buffer.byteLength(script) <= 4096)
      return Buffer.from(`Y ${id} ${timeoutSeconds} ${script}\n`);
    const body = Buffer.from(script);
    return Buffer.concat([Buffer.from(`X ${id} ${timeoutSeconds} ${body.length}\n`), body]);
  },
  upload: (id: number, size: number, guestPath: string) => `U ${id} ${size} ${b64(guestPath)}\n`,
  download: (id: number, guestPath: string) => `D ${id} ${b64(guestPath)}\n`,
  /** Starts a process that runs on after the reply; `timeoutSeconds` 0 means no timeout. */
  start: (id: number, script: string, timeoutSeconds: number) => {
    const body = Buffer.from(script);
    return Buffer.concat([Buffer.from(`P ${id} ${timeoutSeconds} ${body.length}\n`), body]);
  },
  /** Bytes for the stdin of the process started by request `processId`. */
  stdin: (id: number, processId: number, data: Buffer) =>
    Buffer.concat([Buffer.from(`I ${id} ${processId} ${data.length}\n`), data]),
  closeStdin: (id: number, processId: number) => `C ${id} ${processId}\n`,
  signal: (id: number, processId: number, signal: string) => `K ${id} ${processId} ${signal}\n`,
  /** Sets the guest's wall clock to `clockMs` (ms since the epoch), and its identity. */
  identity: (id: number, identity: GuestIdentity, clockMs: number) => {
    const seconds = Math.floor(clockMs / 1000);
    const nanoseconds = Math.min(999_999_999, Math.floor((clockMs - seconds * 1000) * 1e6));
    const { hostname, entropy } = identity;
    const name = hostname ? b64(hostname) : '-';
    const random = entropy.length > 0 ? b64(entropy) : '-';
    const machineId = identity.machineId === undefined ? '' : ` ${identity.machineId}`;
    return `T ${id} ${seconds} ${nanoseconds} ${identity.hostnameFiles ? 1 : 0} ${name} ${random}${machineId}\n`;
  },
};

const REPLY = /^<<<VMKIT:R (\d+) (\d+) ([01])>>>$/;

/** Marks a payload line that cannot be base64 output of the guest: bytes were lost on the way. */
const CORRUPT = Buffer.from('corrupt');

function decodeBase64Line(line: Buffer): Buffer {
  if (line.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(line.toString('latin1'))) return CORRUPT;
  return Buffer.from(line.toString('latin1'), 'base64');
}
const END = /^<<<VMKIT:E (\d+)>>>$/;
const GO = /^<<<VMKIT:GO (\d+)>>>$/;
const SEND = /^<<<VMKIT:SEND (\d+) (\d+)>>>$/;
const OUTPUT = /^<<<VMKIT:O (\d+) ([12]) ([A-Za-z0-9+/]*={0,2})>>>$/;
const EXIT = /^<<<VMKIT:Z (\d+) (\d+) ([01])>>>$/;

/** Turns the guest's output on the command channel into events. */
export class BackdoorParser {
  private lines = new LineSplitter();
  private reply?: { id: number; status: number; timedOut: boolean; stdout?: Buffer; stderr?: Buffer };

  constructor(private readonly emit: (event: BackdoorEvent) => void) {}

  push(chunk: Buffer): void {
    this.lines.push(chunk, (line) => this.onLine(line));
  }

  private onLine(raw: Buffer): void {
    const line = raw.at(-1) === 13 ? raw.subarray(0, -1) : raw;
    const open = this.reply;
    // A backdoor that starts again (the guest rebooted) may have died in the middle of a reply:
    // its banner, never valid base64, ends that reply.
    if (line.toString('latin1') === BANNER) {
      this.reply = undefined;
      if (open) this.emit({ type: 'noise', line: `reply ${open.id} cut short by a new backdoor` });
      this.emit({ type: 'banner' });
      return;
    }
    if (open) {
      if (open.stdout === undefined) open.stdout = decodeBase64Line(line);
      else if (open.stderr === undefined) open.stderr = decodeBase64Line(line);
      else {
        const end = END.exec(line.toString('latin1'));
        this.reply = undefined;
        const intact = open.stdout !== CORRUPT && open.stderr !== CORRUPT;
        if (end && Number(end[1]) === open.id && intact) {
          this.emit({ type: 'reply', ...open, stdout: open.stdout, stderr: open.stderr });
        } else {
          this.emit({ type: 'noise', line: `malformed reply ${open.id}: ${line.toString().slice(0, 200)}` });
        }
      }
      return;
    }
    const text = line.toString('latin1');
    if (text.startsWith('<<<VMKIT:O ')) {
      const output = OUTPUT.exec(text);
      const data = output ? decodeBase64Line(Buffer.from(output[3] ?? '', 'latin1')) : CORRUPT;
      if (output && data !== CORRUPT) {
        const stream = output[2] === '1' ? 'stdout' : 'stderr';
        this.emit({ type: 'output', id: Number(output[1]), stream, data });
      } else this.emit({ type: 'noise', line: `malformed output line: ${text.slice(0, 200)}` });
      return;
    }
    const exit = EXIT.exec(text);
    if (exit) {
      this.emit({ type: 'exit', id: Number(exit[1]), status: Number(exit[2]), timedOut: exit[3] === '1' });
      return;
    }
    const reply = REPLY.exec(text);
    const go = GO.exec(text);
    const send = SEND.exec(text);
    if (reply) this.reply = { id: Number(reply[1]), status: Number(reply[2]), timedOut: reply[3] === '1' };
    else if (go) this.emit({ type: 'go', id: Number(go[1]) });
    else if (send) this.emit({ type: 'send', id: Number(send[1]), size: Number(send[2]) });
    else if (text.length > 0) this.emit({ type: 'noise', line: text.slice(0, 500) });
  }
}

/**
 * The backdoor wire format (see guest/tiny/backdoor.sh): one request line from the host, one
 * framed reply from the guest. Payloads travel as base64 so any bytes survive the tty.
 */

import { LineSplitter } from '../util/lines.js';

export const BANNER = 'Spawning backdoor root shell...';

export type BackdoorEvent =
  | { type: 'banner' }
  | { type: 'reply'; id: number; status: number; timedOut: boolean; stdout: Buffer; stderr: Buffer }
  | { type: 'go'; id: number }
  | { type: 'send'; id: number; size: number }
  | { type: 'noise'; line: string };

const b64 = (text: string | Buffer) => Buffer.from(text).toString('base64');

export const encodeRequest = {
  /** The guest's watchdog counts whole seconds: `timeoutSeconds` must be a whole number >= 1. */
  run: (id: number, script: string, timeoutSeconds: number) => {
    const body = Buffer.from(script);
    return Buffer.concat([Buffer.from(`X ${id} ${timeoutSeconds} ${body.length}\n`), body]);
  },
  upload: (id: number, size: number, guestPath: string) => `U ${id} ${size} ${b64(guestPath)}\n`,
  download: (id: number, guestPath: string) => `D ${id} ${b64(guestPath)}\n`,
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
    const reply = REPLY.exec(text);
    const go = GO.exec(text);
    const send = SEND.exec(text);
    if (reply) this.reply = { id: Number(reply[1]), status: Number(reply[2]), timedOut: reply[3] === '1' };
    else if (go) this.emit({ type: 'go', id: Number(go[1]) });
    else if (send) this.emit({ type: 'send', id: Number(send[1]), size: Number(send[2]) });
    else if (text.length > 0) this.emit({ type: 'noise', line: text.slice(0, 500) });
  }
}

/**
 * The backdoor wire format (see guest/tiny/backdoor.sh): one request line from the host, one
 * framed reply from the guest. Payloads travel as base64 so any bytes survive the tty.
 */

export const BANNER = 'Spawning backdoor root shell...';

export type BackdoorEvent =
  | { type: 'banner' }
  | { type: 'reply'; id: number; status: number; timedOut: boolean; stdout: Buffer; stderr: Buffer }
  | { type: 'go'; id: number }
  | { type: 'send'; id: number; size: number }
  | { type: 'noise'; line: string };

const b64 = (text: string | Buffer) => Buffer.from(text).toString('base64');

export const encodeRequest = {
  run: (id: number, script: string, timeoutSeconds: number) =>
    `X ${id} ${timeoutSeconds.toFixed(3)} ${b64(script)}\n`,
  upload: (id: number, size: number, guestPath: string) => `U ${id} ${size} ${b64(guestPath)}\n`,
  download: (id: number, guestPath: string) => `D ${id} ${b64(guestPath)}\n`,
};

/** Splits a byte stream into lines without copying more than once per line. */
export class LineSplitter {
  private pending: Buffer[] = [];

  push(chunk: Buffer, onLine: (line: Buffer) => void): void {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      const line = this.pending.length ? Buffer.concat([...this.pending, piece]) : piece;
      this.pending = [];
      onLine(line);
      start = nl + 1;
    }
    if (start < chunk.length) this.pending.push(chunk.subarray(start));
  }

  /** Bytes received since the last newline. */
  get partial(): Buffer {
    return Buffer.concat(this.pending);
  }
}

const REPLY = /^<<<VMKIT:R (\d+) (\d+) ([01])>>>$/;
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
    const reply = this.reply;
    if (reply) {
      if (reply.stdout === undefined) reply.stdout = Buffer.from(line.toString('latin1'), 'base64');
      else if (reply.stderr === undefined) reply.stderr = Buffer.from(line.toString('latin1'), 'base64');
      else {
        const end = END.exec(line.toString('latin1'));
        this.reply = undefined;
        if (end && Number(end[1]) === reply.id) {
          this.emit({ type: 'reply', ...reply, stdout: reply.stdout, stderr: reply.stderr });
        } else {
          this.emit({ type: 'noise', line: `malformed reply ${reply.id}: ${line.toString().slice(0, 200)}` });
        }
      }
      return;
    }
    const text = line.toString('latin1');
    let match: RegExpExecArray | null;
    if (text === BANNER) this.emit({ type: 'banner' });
    else if ((match = REPLY.exec(text))) {
      this.reply = { id: Number(match[1]), status: Number(match[2]), timedOut: match[3] === '1' };
    } else if ((match = GO.exec(text))) this.emit({ type: 'go', id: Number(match[1]) });
    else if ((match = SEND.exec(text))) this.emit({ type: 'send', id: Number(match[1]), size: Number(match[2]) });
    else if (text.length > 0) this.emit({ type: 'noise', line: text.slice(0, 500) });
  }
}

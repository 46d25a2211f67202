/**
 * Splits a byte stream into lines without copying more than once per line. A line longer than
 * `maxLineBytes` is handed out in pieces of that size, so that a peer that never sends a newline
 * cannot make it buffer without bound.
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly maxLineBytes = Number.POSITIVE_INFINITY) {}

  push(chunk: Buffer, onLine: (line: Buffer) => void): void {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      const line = this.pending.length ? Buffer.concat([...this.pending, piece]) : piece;
      this.pending = [];
      this.pendingBytes = 0;
      onLine(line);
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.pending.push(chunk.subarray(start));
      this.pendingBytes += chunk.length - start;
      if (this.pendingBytes >= this.maxLineBytes) {
        const whole = Buffer.concat(this.pending);
        this.pending = [];
        this.pendingBytes = 0;
        for (let at = 0; at < whole.length; at += this.maxLineBytes) {
          const end = Math.min(at + this.maxLineBytes, whole.length);
          if (end - at === this.maxLineBytes) onLine(whole.subarray(at, end));
          else {
            this.pending.push(whole.subarray(at));
            this.pendingBytes = whole.length - at;
          }
        }
      }
    }
  }

  /** Bytes received since the last newline. */
  get partial(): Buffer {
    return Buffer.concat(this.pending);
  }
}

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

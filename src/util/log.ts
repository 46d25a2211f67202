/** Writes a driver's human-readable log: one line per event, prefixed by its source, with elapsed time. */
export class RunLog {
  private readonly started = performance.now();
  /** Also receive every line, unformatted (the run's ledger). */
  readonly taps = new Set<(source: string, message: string) => void>();

  constructor(private readonly write: (line: string) => void = (line) => process.stderr.write(`${line}\n`)) {}

  line(source: string, message: string): void {
    for (const tap of this.taps) tap(source, message);
    const seconds = ((performance.now() - this.started) / 1000).toFixed(1).padStart(6);
    for (const part of message.split('\n')) this.write(`${seconds}s ${`[${source}]`.padEnd(12)} ${part}`);
  }

  /** A logger bound to one source, for handing to a machine. */
  for(source: string): (message: string) => void {
    return (message) => this.line(source, message);
  }
}

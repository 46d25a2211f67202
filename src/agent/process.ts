import { PassThrough, Writable } from 'node:stream';
import { ConfigError, MachineCrashedError } from '../errors.js';
import { waitWithin } from '../util/time.js';
import { parseInput, timeoutMs as timeoutSchema } from '../util/validate.js';
import type { BackdoorChannel, ProcessListener } from './backdoor.js';
import { encodeRequest } from './framing.js';

export interface ProcessExit {
  exitCode: number;
  /** The guest killed it when its timeout ran out. */
  timedOut: boolean;
}

export interface StartOptions {
  /** The guest kills the process's whole session after this long (whole seconds); none by default. */
  timeoutMs?: number;
  /** Keep every byte of output (for execute with callbacks); otherwise only the last 64 KiB. */
  keepAllOutput?: boolean;
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
}

/** How much output a long-running process keeps for `stdoutTail`/`stderrTail` and errors. */
const TAIL_BYTES = 64 * 1024;

/**
 * A process running in the guest, started by `BackdoorChannel.start`: its output streams in as
 * the guest produces it (stdout and stderr apart, any bytes), `stdin` feeds it, `kill` signals
 * its whole session, `wait` resolves with its exit status. Output is pushed to the streams as it
 * arrives, whether or not anyone reads them.
 */
export class GuestProcess {
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  readonly stdin: Writable;
  private readonly output = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  private readonly outputBytes = { stdout: 0, stderr: 0 };
  private exitInfo?: ProcessExit;
  private failure?: Error;
  private readonly waiters = new Set<() => void>();
  private processId = 0;
  /** Settles when the process has exited (or the machine broke), whoever waits. */
  readonly exited: Promise<ProcessExit>;
  private settleExited!: { resolve: (exit: ProcessExit) => void; reject: (error: Error) => void };

  private constructor(
    private readonly channel: BackdoorChannel,
    readonly machine: string,
    readonly command: string,
    private readonly options: StartOptions,
    private readonly consoleTail: () => string,
  ) {
    this.stdin = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        this.control('stdin', (id) => encodeRequest.stdin(id, this.processId, Buffer.from(chunk))).then(
          () => done(),
          done,
        );
      },
      final: (done) => {
        this.control('end of stdin', (id) => encodeRequest.closeStdin(id, this.processId)).then(
          () => done(),
          done,
        );
      },
    });
    this.stdin.on('error', () => {}); // each failed write reports to its own callback
    this.exited = new Promise<ProcessExit>((resolve, reject) => {
      this.settleExited = { resolve, reject };
    });
    this.exited.catch(() => {});
  }

  static async start(
    channel: BackdoorChannel,
    machine: string,
    command: string,
    options: StartOptions,
    consoleTail: () => string,
  ): Promise<GuestProcess> {
    const started = new GuestProcess(channel, machine, command, options, consoleTail);
    const seconds = options.timeoutMs === undefined ? 0 : Math.max(1, Math.ceil(options.timeoutMs / 1000));
    started.processId = await channel.start(command, seconds, started.listener());
    return started;
  }

  /** The guest's id of the process (the id of the request that started it). */
  get id(): number {
    return this.processId;
  }

  /** Its exit, once it has exited. */
  get exit(): ProcessExit | undefined {
    return this.exitInfo;
  }

  /** What it wrote so far (everything with `keepAllOutput`, else the last 64 KiB). */
  get stdoutBytes(): Buffer {
    return Buffer.concat(this.output.stdout);
  }

  get stderrBytes(): Buffer {
    return Buffer.concat(this.output.stderr);
  }

  /**
   * Resolves when the process has exited and all its output arrived; with `timeoutMs`, a
   * TimeoutError when it runs longer (the process runs on). Without one, as long as it runs.
   */
  async wait(timeoutMs?: number): Promise<ProcessExit> {
    parseInput(timeoutSchema.optional(), timeoutMs, 'GuestProcess.wait: timeoutMs');
    if (this.exitInfo) return this.exitInfo;
    if (this.failure) throw this.failure;
    if (timeoutMs === undefined) return this.exited;
    await waitWithin<void>(
      timeoutMs,
      `${JSON.stringify(this.command)} on ${this.machine} to exit`,
      (resolve, reject) => {
        const settle = () => (this.failure ? reject(this.failure) : resolve());
        this.waiters.add(settle);
        return () => this.waiters.delete(settle);
      },
      {
        lastState: () => `still running; stdout so far: ${JSON.stringify(tailText(this.stdoutBytes))}`,
        consoleTail: this.consoleTail,
      },
    );
    if (this.failure) throw this.failure;
    return this.exited;
  }

  /** Sends `signal` (a name like TERM or KILL, or a number) to the process and all it started. */
  async kill(signal: string | number = 'TERM'): Promise<void> {
    const name = String(signal).replace(/^SIG/, '');
    if (!/^([A-Z][A-Z0-9]*|\d{1,2})$/.test(name))
      throw new ConfigError(`kill: not a signal name or number: ${JSON.stringify(signal)}`);
    if (this.exitInfo || this.failure) return;
    const result = await this.control(`signal ${name}`, (id) =>
      encodeRequest.signal(id, this.processId, name),
    );
    if (result.status !== 0 && !this.exitInfo && !/has exited/.test(result.stderr.toString())) {
      throw new MachineCrashedError(
        this.machine,
        `kill -${name} of ${JSON.stringify(this.command)} failed: ${result.stderr.toString().trim()}`,
        this.consoleTail(),
      );
    }
  }

  private control(what: string, encode: (id: number) => string | Buffer) {
    if (this.failure) return Promise.reject(this.failure);
    return this.channel.control(`${what} of ${JSON.stringify(this.command)}`, encode);
  }

  private listener(): ProcessListener {
    return {
      output: (stream, data) => {
        this.keep(stream, data);
        (stream === 'stdout' ? this.options.onStdout : this.options.onStderr)?.(data);
        this[stream].write(data);
      },
      exit: (status, timedOut) => {
        this.exitInfo = { exitCode: status, timedOut };
        this.stdout.end();
        this.stderr.end();
        this.settle();
      },
      broken: (error) => {
        this.failure = error;
        this.stdout.end();
        this.stderr.end();
        this.settle();
      },
    };
  }

  private keep(stream: 'stdout' | 'stderr', data: Buffer): void {
    const chunks = this.output[stream];
    chunks.push(data);
    this.outputBytes[stream] += data.length;
    if (this.options.keepAllOutput) return;
    while (this.outputBytes[stream] - (chunks[0]?.length ?? 0) >= TAIL_BYTES) {
      this.outputBytes[stream] -= chunks.shift()?.length ?? 0;
    }
  }

  private settle(): void {
    if (this.exitInfo) this.settleExited.resolve(this.exitInfo);
    else if (this.failure) this.settleExited.reject(this.failure);
    for (const waiter of [...this.waiters]) waiter();
    this.waiters.clear();
  }
}

function tailText(bytes: Buffer): string {
  return bytes.subarray(-300).toString('utf8');
}

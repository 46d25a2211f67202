import type { Socket } from 'node:net';
import { MachineCrashedError, TimeoutError, TransferError } from '../errors.js';
import { waitWithin } from '../util/time.js';
import { type BackdoorEvent, BackdoorParser, encodeRequest, type RawResult } from './framing.js';
import { ResetHold } from './reset-hold.js';
import { FrameReader, openSource, receiveFile, type SentFrame, writeFrame } from './transfer.js';

export type { RawResult } from './framing.js';

interface Pending {
  id: number;
  what: string;
  resolve: (result: RawResult) => void;
  reject: (error: Error) => void;
  onGo?: () => void;
}

/** Receives what a started process sends: its output as it comes, then its exit. */
export interface ProcessListener {
  output(stream: 'stdout' | 'stderr', data: Buffer): void;
  exit(status: number, timedOut: boolean): void;
  /** The channel broke (the machine died or was closed): no exit will come. */
  broken(error: Error): void;
}

/** A timeout as the guest's watchdog counts it: whole seconds, at least one. */
export const guestSeconds = (timeoutMs: number) => Math.max(1, Math.ceil(timeoutMs / 1000));

/** How long past a command's own timeout the host waits for the guest to report the kill. */
const GRACE_MS = 10_000;

/**
 * The host end of the backdoor root shell: one request at a time over the command channel
 * (the vmkit.shell virtio serial port), bulk file bytes over the transfer port. Requests on one machine are serialized;
 * channels of different machines are independent.
 */
export class BackdoorChannel {
  private readonly parser = new BackdoorParser((event) => this.onEvent(event));
  private nextId = 1;
  private pending?: Pending;
  private queue: Promise<unknown> = Promise.resolve();
  private failure?: Error;
  private bannerSeen = false;
  private readonly bannerWaiters = new Set<() => void>();
  private readonly failureWaiters = new Set<(error: Error) => void>();
  private readonly frames = new FrameReader();
  private readonly processes = new Map<number, ProcessListener>();
  private readonly hold = new ResetHold();
  /** Lines the guest printed on the channel outside any reply. */
  readonly noise: string[] = [];

  constructor(
    private readonly machine: string,
    private readonly shell: Socket,
    private readonly transfer: Socket | undefined,
    private readonly consoleTail: () => string,
    /** Where request ids start: a channel attached to a guest after another gone one picks its own. */
    firstId = 1,
  ) {
    this.nextId = firstId;
    shell.on('data', (chunk: Buffer) => this.parser.push(chunk));
    transfer?.on('data', (chunk: Buffer) => this.frames.push(chunk));
  }

  /** Why the channel is unusable, if it is. */
  get brokenReason(): string | undefined {
    return this.failure?.message;
  }

  /** Resolves once the guest agent announced itself on its channel. */
  async waitForBanner(timeoutMs: number): Promise<void> {
    if (this.bannerSeen) return;
    if (this.failure) throw this.failure;
    await waitWithin<void>(
      timeoutMs,
      'the backdoor banner',
      (resolve, reject) => {
        this.bannerWaiters.add(resolve);
        this.failureWaiters.add(reject);
        return () => {
          this.bannerWaiters.delete(resolve);
          this.failureWaiters.delete(reject);
        };
      },
      { lastState: () => 'no banner on the vmkit.shell port yet', consoleTail: this.consoleTail },
    );
  }

  /**
   * Runs a shell script in the guest; resolves with raw bytes, whatever the exit status. The
   * guest's watchdog counts whole seconds, so the timeout is rounded up to the next second.
   */
  run(script: string, timeoutMs: number): Promise<RawResult> {
    const what = `command ${JSON.stringify(script)}`;
    return this.serialize(
      what,
      guestSeconds(timeoutMs) * 1000,
      this.runRequest(script, timeoutMs),
      timeoutMs,
    );
  }

  private runRequest(script: string, timeoutMs: number) {
    return (id: number) => {
      this.shell.write(encodeRequest.run(id, script, guestSeconds(timeoutMs)));
      return {};
    };
  }

  /**
   * Starts a script that runs on after the call returns; its output and exit go to `listener`.
   * Resolves with the process id once the guest has started it. `timeoutSeconds` 0: no timeout.
   */
  async start(script: string, timeoutSeconds: number, listener: ProcessListener): Promise<number> {
    let processId = 0;
    const result = await this.serialize(`start of ${JSON.stringify(script)}`, 30_000, (id) => {
      processId = id;
      this.processes.set(id, listener);
      this.shell.write(encodeRequest.start(id, script, timeoutSeconds));
      return {};
    }).catch((error: Error) => {
      this.processes.delete(processId);
      throw error;
    });
    if (result.status !== 0) {
      this.processes.delete(processId);
      throw new MachineCrashedError(
        this.machine,
        `the guest could not start ${JSON.stringify(script)}: ${result.stderr}`,
        this.consoleTail(),
      );
    }
    return processId;
  }

  /** A request about a started process (stdin, end of stdin, signal), answered by a reply. */
  control(what: string, encode: (id: number) => string | Buffer, timeoutMs = 30_000): Promise<RawResult> {
    return this.serialize(what, timeoutMs, (id) => {
      this.shell.write(encode(id));
      return {};
    });
  }

  /** A round trip that starts no guest process (end of stdin of none, which the agent acknowledges). */
  ping = (timeoutMs = 30_000) => this.control('ping', (id) => encodeRequest.closeStdin(id, 0), timeoutMs);

  /**
   * Copies a host file into the guest through the transfer port, in one checksummed frame. The
   * guest writes a temporary file next to the target and renames it into place only when the
   * checksum matches. A failure on either side fails this call only.
   */
  async upload(hostPath: string, guestPath: string, timeoutMs: number): Promise<RawResult> {
    const transfer = this.requireTransfer();
    const file = await openSource(hostPath);
    try {
      const size = (await file.stat()).size;
      let sent: Promise<SentFrame> | undefined;
      const result = await this.serialize(`upload of ${hostPath} to ${guestPath}`, timeoutMs, (id) => {
        this.shell.write(encodeRequest.upload(id, size, guestPath));
        return {
          onGo: () => {
            sent = writeFrame(transfer, id, file, size, () => this.failure !== undefined);
            sent.catch(() => {});
          },
        };
      });
      const readError = sent && (await sent).readError;
      if (readError) throw new TransferError(`reading ${hostPath} failed: ${readError.message}`);
      return result;
    } finally {
      await file.close();
    }
  }

  /**
   * Copies a guest file to the host through the transfer port, in one checksummed frame. The
   * bytes go to a temporary file beside `hostPath`, renamed into place once they are verified;
   * on any failure nothing is left at `hostPath`.
   */
  download(guestPath: string, hostPath: string, timeoutMs: number): Promise<RawResult> {
    this.requireTransfer();
    const what = `download of ${guestPath} to ${hostPath}`;
    return receiveFile(this.frames, guestPath, hostPath, timeoutMs, (expect) =>
      this.serialize(what, timeoutMs, (id) => {
        expect(id);
        this.shell.write(encodeRequest.download(id, guestPath));
        return {};
      }),
    );
  }

  /** Runs `task` while no request is in flight and none can start: for pausing the guest. */
  exclusive<T>(task: () => Promise<T>): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const call = this.queue.then(() => this.afterHold('exclusive use of the channel')).then(task);
    this.queue = call.catch(() => {});
    return call;
  }

  /** For a restored guest, whose backdoor was already up when the snapshot was taken. */
  assumeBannerSeen(): void {
    this.bannerSeen = true;
  }

  /**
   * The guest was reset (it rebooted): the request in flight and every started process cannot
   * complete and fail with `rebooted(what)`; the banner is awaited again, and requests wait until
   * `recover` has set the fresh guest up, through the `run` it is given (which does not wait);
   * `latest()` turns false once another reset came. A recover that fails breaks the channel with
   * its error, unless another reset came meanwhile.
   */
  guestReset(
    rebooted: (what: string) => Error,
    recover: (
      run: (script: string, timeoutMs: number) => Promise<RawResult>,
      latest: () => boolean,
    ) => Promise<void>,
  ): void {
    if (this.failure) return;
    this.bannerSeen = false;
    const run = (script: string, timeoutMs: number) =>
      this.request(
        'the set-up after a reboot',
        guestSeconds(timeoutMs) * 1000,
        this.runRequest(script, timeoutMs),
      );
    this.hold.begin(
      (latest) => recover(run, latest),
      (error) => this.fail(error),
    );
    this.abandon(rebooted);
  }

  /** Resolves once the guest is back from a reset and set up (at once when none is under way). */
  async recovered(timeoutMs: number): Promise<void> {
    await this.afterHold('the guest to come back from its reboot', timeoutMs);
    if (this.failure) throw this.failure;
  }

  /** Writes a request without waiting for its answer: for poweroff, which never answers. */
  fireAndForget(script: string): void {
    if (this.failure) return;
    this.shell.write(encodeRequest.run(this.nextId++, script, 60));
  }

  /** Starts a script without waiting for anything, not even the guest's reply that it started. */
  detach(script: string): void {
    if (this.failure) return;
    this.shell.write(encodeRequest.start(this.nextId++, script, 0));
  }

  /** Fails the pending call and every later one with `error`. */
  fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    for (const waiter of [...this.failureWaiters]) waiter(error);
    this.abandon(() => error);
  }

  /** Fails the request in flight and breaks every started process: none of them will finish. */
  private abandon(error: (what: string) => Error): void {
    const pending = this.pending;
    this.pending = undefined;
    pending?.reject(error(pending.what));
    for (const listener of this.processes.values()) listener.broken(error('a started process'));
    this.processes.clear();
  }

  /** `holdMs`: how long the request may wait for a guest coming back from a reset (no limit: none). */
  private serialize(
    what: string,
    timeoutMs: number,
    send: (id: number) => Pick<Pending, 'onGo'>,
    holdMs?: number,
  ): Promise<RawResult> {
    const call = this.queue
      .then(() => this.afterHold(what, holdMs))
      .then(() => this.request(what, timeoutMs, send));
    this.queue = call.catch(() => {});
    return call;
  }

  /** Waits while the guest comes back from a reset: at most `timeoutMs`, or as long as that takes. */
  private afterHold(what: string, timeoutMs?: number): Promise<void> {
    return this.hold.wait(`the guest to come back from its reboot for ${what}`, timeoutMs, {
      lastState: () => (this.bannerSeen ? 'its set-up runs' : 'no backdoor banner yet'),
      consoleTail: this.consoleTail,
    });
  }

  private request(
    what: string,
    timeoutMs: number,
    send: (id: number) => Pick<Pending, 'onGo'>,
  ): Promise<RawResult> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<RawResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        const error = new TimeoutError(
          `the guest to answer ${what}`,
          timeoutMs + GRACE_MS,
          `the guest's own timeout of ${timeoutMs} ms passed ${GRACE_MS} ms ago without a reply on the vmkit.shell port; the backdoor is unresponsive`,
          this.consoleTail(),
        );
        this.fail(
          new MachineCrashedError(
            this.machine,
            `backdoor unresponsive (${what} got no reply)`,
            this.consoleTail(),
          ),
        );
        reject(error);
      }, timeoutMs + GRACE_MS);
      this.pending = {
        id,
        what,
        resolve: (result) => {
          clearTimeout(timer);
          resolve(result);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      Object.assign(this.pending, send(id));
    });
  }

  private onEvent(event: BackdoorEvent): void {
    const pending = this.pending;
    switch (event.type) {
      case 'banner':
        if (!this.bannerSeen) {
          this.bannerSeen = true;
          for (const waiter of [...this.bannerWaiters]) waiter();
        } else if (pending) {
          this.pending = undefined;
          pending.reject(
            new MachineCrashedError(
              this.machine,
              `backdoor shell restarted during ${pending.what}`,
              this.consoleTail(),
            ),
          );
        }
        return;
      case 'reply':
        if (pending?.id !== event.id) {
          this.noise.push(`reply to unknown request ${event.id}`);
          return;
        }
        this.pending = undefined;
        pending.resolve(event);
        return;
      case 'go':
        if (pending?.id === event.id) pending.onGo?.();
        return;
      case 'send':
        return; // the transfer port's frame header carries the size
      case 'output':
        this.processes.get(event.id)?.output(event.stream, event.data);
        return;
      case 'exit':
        this.processes.get(event.id)?.exit(event.status, event.timedOut);
        this.processes.delete(event.id);
        return;
      case 'noise':
        if (pending && event.line.startsWith('malformed reply')) {
          this.pending = undefined;
          pending.reject(
            new MachineCrashedError(
              this.machine,
              `the reply to ${pending.what} arrived damaged`,
              this.consoleTail(),
            ),
          );
        }
        this.noise.push(event.line);
        if (this.noise.length > 100) this.noise.shift();
        return;
    }
  }

  private requireTransfer(): Socket {
    if (!this.transfer) throw new TransferError(`machine ${this.machine} has no transfer port`);
    return this.transfer;
  }
}

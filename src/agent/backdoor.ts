import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { MachineCrashedError, TimeoutError, TransferError } from '../errors.js';
import { waitWithin, withTimeout } from '../util/time.js';
import { type BackdoorEvent, BackdoorParser, encodeRequest } from './framing.js';

export interface RawResult {
  status: number;
  /** The guest killed the command when its timeout ran out. */
  timedOut: boolean;
  stdout: Buffer;
  stderr: Buffer;
}

interface Pending {
  id: number;
  what: string;
  resolve: (result: RawResult) => void;
  reject: (error: Error) => void;
  onGo?: () => void;
  onSend?: (size: number) => void;
}

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
  private transferBuffer: Buffer[] = [];
  private transferSink?: (chunk: Buffer) => void;
  /** Lines the guest printed on the channel outside any reply. */
  readonly noise: string[] = [];

  constructor(
    private readonly machine: string,
    private readonly shell: Socket,
    private readonly transfer: Socket | undefined,
    private readonly consoleTail: () => string,
  ) {
    shell.on('data', (chunk: Buffer) => this.parser.push(chunk));
    transfer?.on('data', (chunk: Buffer) => {
      if (this.transferSink) this.transferSink(chunk);
      else this.transferBuffer.push(chunk);
    });
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

  /** Runs a shell script in the guest; resolves with raw bytes, whatever the exit status. */
  run(script: string, timeoutMs: number): Promise<RawResult> {
    return this.serialize(`command ${JSON.stringify(script)}`, timeoutMs, (id) => {
      this.shell.write(encodeRequest.run(id, script, timeoutMs / 1000));
      return {};
    });
  }

  /** Copies a host file into the guest, through the transfer port. */
  async upload(hostPath: string, guestPath: string, timeoutMs: number): Promise<RawResult> {
    const { size } = await stat(hostPath);
    return this.serialize(`upload of ${hostPath} to ${guestPath}`, timeoutMs, (id) => {
      this.shell.write(encodeRequest.upload(id, size, guestPath));
      return {
        onGo: () => {
          this.streamFileTo(hostPath).catch((error: Error) => this.fail(error));
        },
      };
    });
  }

  /** Copies a guest file to the host, through the transfer port. */
  async download(guestPath: string, hostPath: string, timeoutMs: number): Promise<RawResult> {
    const sink = createWriteStream(hostPath);
    let received: Promise<void> | undefined;
    try {
      const result = await this.serialize(`download of ${guestPath} to ${hostPath}`, timeoutMs, (id) => {
        this.shell.write(encodeRequest.download(id, guestPath));
        return {
          onSend: (size) => {
            received = this.receiveInto(sink, size);
          },
        };
      });
      // The reply and the bytes travel on different sockets: the reply may come first.
      if (received) await withTimeout(received, timeoutMs, `the bytes of ${guestPath}`);
      return result;
    } finally {
      this.transferSink = undefined;
      if (!sink.writableEnded) sink.end();
      await finished(sink).catch(() => {});
    }
  }

  /** Runs `task` while no request is in flight and none can start: for pausing the guest. */
  exclusive<T>(task: () => Promise<T>): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const call = this.queue.then(task);
    this.queue = call.catch(() => {});
    return call;
  }

  /** For a restored guest, whose backdoor was already up when the snapshot was taken. */
  assumeBannerSeen(): void {
    this.bannerSeen = true;
  }

  /** Writes a request without waiting for its answer: for poweroff, which never answers. */
  fireAndForget(script: string): void {
    if (this.failure) return;
    this.shell.write(encodeRequest.run(this.nextId++, script, 60));
  }

  /** Fails the pending call and every later one with `error`. */
  fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    for (const waiter of [...this.failureWaiters]) waiter(error);
    const pending = this.pending;
    this.pending = undefined;
    pending?.reject(error);
  }

  private serialize(
    what: string,
    timeoutMs: number,
    send: (id: number) => Pick<Pending, 'onGo' | 'onSend'>,
  ): Promise<RawResult> {
    const call = this.queue.then(() => this.request(what, timeoutMs, send));
    this.queue = call.catch(() => {});
    return call;
  }

  private request(
    what: string,
    timeoutMs: number,
    send: (id: number) => Pick<Pending, 'onGo' | 'onSend'>,
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
        if (pending?.id === event.id) pending.onSend?.(event.size);
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

  private async streamFileTo(hostPath: string): Promise<void> {
    const transfer = this.requireTransfer();
    for await (const chunk of createReadStream(hostPath)) {
      if (this.failure) return;
      // A guest that stops reading (it died, or the call timed out) must not hold this loop forever.
      if (!transfer.write(chunk)) await Promise.race([once(transfer, 'drain'), once(transfer, 'close')]);
    }
  }

  private receiveInto(sink: Writable, size: number): Promise<void> {
    this.requireTransfer();
    if (size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let remaining = size;
      this.transferSink = (chunk: Buffer) => {
        const take = chunk.subarray(0, remaining);
        remaining -= take.length;
        sink.write(take);
        if (remaining === 0) {
          this.transferSink = undefined;
          resolve();
        }
      };
      for (const chunk of this.transferBuffer.splice(0)) this.transferSink?.(chunk);
    });
  }

  private requireTransfer(): Socket {
    if (!this.transfer) throw new TransferError(`machine ${this.machine} has no transfer port`);
    return this.transfer;
  }
}

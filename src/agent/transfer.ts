import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { constants } from 'node:fs';
import { type FileHandle, open, rename, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { TransferError } from '../errors.js';
import { withTimeout } from '../util/time.js';
import type { RawResult } from './framing.js';

/**
 * Framing of file bytes on the agent's transfer port (guest side: guest/agent/transfer.c):
 *
 *   <<<VMKIT:XFER <id> <size>>>>\n   then exactly <size> bytes   then <md5 hex, or FAILED>\n
 *
 * Both sides always write and read whole frames, whatever fails: a sender that cannot read its
 * file pads with zeros and ends with FAILED; a receiver that cannot store the bytes still drains
 * them. A frame for another transfer (left by one that was given up) is skipped whole, so a
 * failure can never shift the stream. The checksum is checked by the receiving end.
 */

export const FRAME_FAILED = 'FAILED';
const HEADER = /^<<<VMKIT:XFER (\d+) (\d+)>>>$/;
const CHUNK = 1 << 16;

export const frameHeader = (id: number, size: number) => `<<<VMKIT:XFER ${id} ${size}>>>\n`;

export interface SentFrame {
  /** The host file could not be read whole: the frame was padded and marked FAILED. */
  readError?: Error;
}

/**
 * Waits for the port to drain, or to close: a guest that stops reading (it died) must not hold
 * the sender forever. The losing wait is cancelled, so that its listeners do not pile up.
 */
async function drainedOrClosed(port: Socket): Promise<void> {
  const cancel = new AbortController();
  try {
    await Promise.race([
      once(port, 'drain', { signal: cancel.signal }),
      once(port, 'close', { signal: cancel.signal }),
    ]);
  } finally {
    cancel.abort();
  }
}

/** Writes one whole frame of `size` bytes read from `file`; never fewer bytes, whatever happens. */
export async function writeFrame(
  port: Socket,
  id: number,
  file: FileHandle,
  size: number,
  stopped: () => boolean,
): Promise<SentFrame> {
  const hash = createHash('md5');
  let readError: Error | undefined;
  let position = 0;
  const buffer = Buffer.alloc(CHUNK);
  const write = async (bytes: Buffer | string) => {
    if (!port.write(bytes)) await drainedOrClosed(port);
  };
  await write(frameHeader(id, size));
  while (position < size) {
    if (stopped() || port.destroyed) return { readError: new Error('the machine stopped reading') };
    const want = Math.min(CHUNK, size - position);
    let got = 0;
    if (!readError) {
      try {
        ({ bytesRead: got } = await file.read(buffer, 0, want, position));
        if (got === 0) readError = new Error(`the file shrank to ${position} bytes while it was sent`);
      } catch (error) {
        readError = error as Error;
      }
    }
    // Past a read error the frame is finished with zeros, so that the stream stays in step.
    const chunk = readError ? Buffer.alloc(want) : Buffer.from(buffer.subarray(0, got));
    hash.update(chunk);
    await write(chunk);
    position += chunk.length;
  }
  await write(`${readError ? FRAME_FAILED : hash.digest('hex')}\n`);
  return { readError };
}

/** Where a received frame goes: its bytes in order, then its trailer. */
export interface FrameSink {
  data(chunk: Buffer): void;
  end(outcome: { md5: string; trailer: string }): void;
}

/** Reads frames off the transfer port and hands each to the sink expecting its id; skips others. */
export class FrameReader {
  private readonly sinks = new Map<number, FrameSink>();
  private line: Buffer[] = [];
  private state: { kind: 'header' } | { kind: 'body' | 'trailer'; id: number; remaining: number } = {
    kind: 'header',
  };
  private hash = createHash('md5');
  /** Frames that no transfer expected, for diagnostics. */
  skipped = 0;

  expect(id: number, sink: FrameSink): void {
    this.sinks.set(id, sink);
  }

  forget(id: number): void {
    this.sinks.delete(id);
  }

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      const state = this.state;
      if (state.kind === 'body') {
        const take = chunk.subarray(at, at + state.remaining);
        at += take.length;
        state.remaining -= take.length;
        this.hash.update(take);
        this.sinks.get(state.id)?.data(take);
        if (state.remaining === 0) this.state = { kind: 'trailer', id: state.id, remaining: 0 };
        continue;
      }
      const newline = chunk.indexOf(10, at);
      if (newline < 0) {
        this.line.push(chunk.subarray(at));
        return;
      }
      this.line.push(chunk.subarray(at, newline));
      at = newline + 1;
      const text = Buffer.concat(this.line).toString('latin1');
      this.line = [];
      this.onLine(text);
    }
  }

  private onLine(text: string): void {
    const state = this.state;
    if (state.kind === 'trailer') {
      this.state = { kind: 'header' };
      const sink = this.sinks.get(state.id);
      this.sinks.delete(state.id);
      sink?.end({ md5: this.hash.digest('hex'), trailer: text });
      return;
    }
    const header = HEADER.exec(text);
    if (!header) return; // bytes outside any frame: nothing to do with them
    const id = Number(header[1]);
    const size = Number(header[2]);
    if (!this.sinks.has(id)) this.skipped++;
    this.hash = createHash('md5');
    this.state = size > 0 ? { kind: 'body', id, remaining: size } : { kind: 'trailer', id, remaining: 0 };
  }
}

/** Opens a host file to send; refuses what is not a regular file, before the guest is asked. */
export async function openSource(hostPath: string): Promise<FileHandle> {
  // Non-blocking, so that a FIFO cannot hold the call before it is refused.
  const file = await open(hostPath, constants.O_RDONLY | constants.O_NONBLOCK).catch(
    (error: NodeJS.ErrnoException) => {
      throw new TransferError(`cannot read ${hostPath}: ${error.code ?? error.message}`);
    },
  );
  const info = await file.stat();
  if (!info.isFile()) {
    await file.close();
    throw new TransferError(
      `cannot copy ${hostPath}: it is ${info.isDirectory() ? 'a directory' : 'not a regular file'}`,
    );
  }
  return file;
}

/**
 * Copies a guest file to the host: `request` sends the download request, telling `expect` its id
 * first. The bytes go to a temporary file beside `hostPath`, renamed into place once they are
 * verified; on any failure nothing is left at `hostPath`.
 */
export async function receiveFile(
  frames: FrameReader,
  guestPath: string,
  hostPath: string,
  timeoutMs: number,
  request: (expect: (id: number) => void) => Promise<RawResult>,
): Promise<RawResult> {
  const partial = `${hostPath}.vmkit-partial-${randomBytes(4).toString('hex')}`;
  const file = await withTimeout(open(partial, 'wx'), timeoutMs, `creating ${partial}`).catch(
    (error: Error) => {
      throw new TransferError(`cannot write ${hostPath}: ${error.message}`);
    },
  );
  let received: Promise<void> | undefined;
  let id = 0;
  try {
    const result = await request((requestId) => {
      id = requestId;
      received = receiveFrame(frames, requestId, file, guestPath);
      received.catch(() => {});
    });
    if (result.status !== 0) return result;
    // The reply and the bytes travel on different ports: the reply may come first.
    await withTimeout(received ?? Promise.resolve(), timeoutMs, `the bytes of ${guestPath}`);
    await file.close();
    await rename(partial, hostPath);
    return result;
  } catch (error) {
    frames.forget(id);
    throw error;
  } finally {
    await file.close().catch(() => {});
    await rm(partial, { force: true });
  }
}

/** Writes the frame of transfer `id` into `file` and checks its checksum. */
function receiveFrame(frames: FrameReader, id: number, file: FileHandle, guestPath: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let writing: Promise<unknown> = Promise.resolve();
    let writeError: Error | undefined;
    frames.expect(id, {
      data: (chunk) => {
        const copy = Buffer.from(chunk);
        writing = writing
          .then(() => file.write(copy))
          .catch((error: Error) => {
            writeError ??= error;
          });
      },
      end: ({ md5, trailer }) => {
        writing.then(() => {
          if (writeError)
            reject(new TransferError(`writing the bytes of ${guestPath} failed: ${writeError.message}`));
          else if (trailer === FRAME_FAILED)
            reject(new TransferError(`the guest could not read ${guestPath} whole`));
          else if (trailer !== md5)
            reject(
              new TransferError(
                `the bytes of ${guestPath} arrived damaged (md5 ${md5}, the guest sent ${trailer})`,
              ),
            );
          else resolve();
        });
      },
    });
  });
}

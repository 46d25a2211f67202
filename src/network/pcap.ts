import { createWriteStream, type WriteStream } from 'node:fs';
import { ConfigError, NetworkError } from '../errors.js';

/**
 * Classic libpcap files (https://www.tcpdump.org/manpages/pcap-savefile.5.html), written without a dependency.
 *
 * The writer always writes little-endian with the microsecond magic, so a file it makes is byte-for-byte
 * predictable; the reader accepts both byte orders and the nanosecond variant.
 */

/** The magic of a file with microsecond timestamps, as a uint32 in the file's byte order. */
export const PCAP_MAGIC_MICROSECONDS = 0xa1b2c3d4;
/** The magic of a file with nanosecond timestamps, as a uint32 in the file's byte order. */
export const PCAP_MAGIC_NANOSECONDS = 0xa1b23c4d;
/** Bytes of a frame kept in a record; the rest is cut off (the record's originalLength keeps the full size). */
export const PCAP_SNAPLEN = 262_144;
/** LINKTYPE_ETHERNET. */
export const PCAP_LINKTYPE_ETHERNET = 1;
/** Bytes of the file header. */
export const PCAP_GLOBAL_HEADER_LENGTH = 24;
/** Bytes of the header before each record's data. */
export const PCAP_RECORD_HEADER_LENGTH = 16;
/** Bytes a writer may have waiting for the disk; frames that would go beyond are dropped and counted. */
export const PCAP_BUFFER_LIMIT = 16 * 1024 * 1024;

/** The largest ts_sec a record can hold (the field is a uint32). */
const MAX_SECONDS = 0xffff_ffff;

export interface PcapWriterOptions {
  /** Bytes that may wait for the disk before frames are dropped (default PCAP_BUFFER_LIMIT). */
  bufferLimit?: number;
}

/** The 24-byte global header the writer puts at the start of every file. */
export function pcapGlobalHeader(): Buffer {
  const header = Buffer.alloc(PCAP_GLOBAL_HEADER_LENGTH);
  header.writeUInt32LE(PCAP_MAGIC_MICROSECONDS, 0);
  header.writeUInt16LE(2, 4); // version_major
  header.writeUInt16LE(4, 6); // version_minor
  header.writeInt32LE(0, 8); // thiszone: timestamps are UTC
  header.writeUInt32LE(0, 12); // sigfigs
  header.writeUInt32LE(PCAP_SNAPLEN, 16);
  header.writeUInt32LE(PCAP_LINKTYPE_ETHERNET, 20);
  return header;
}

/**
 * A record (header and the kept bytes of the frame) for a frame seen at `timeMs` milliseconds since the epoch.
 * The time is rounded to the nearest microsecond; one that is not finite counts as now, one outside what the
 * format holds (1970 to 2106) is clamped.
 */
export function pcapRecord(frame: Uint8Array, timeMs: number): Buffer {
  const micros = Math.round((Number.isFinite(timeMs) ? timeMs : Date.now()) * 1000);
  let seconds = Math.floor(micros / 1_000_000);
  let fraction = micros - seconds * 1_000_000;
  if (seconds < 0) {
    seconds = 0;
    fraction = 0;
  } else if (seconds > MAX_SECONDS) {
    seconds = MAX_SECONDS;
    fraction = 999_999;
  }
  const included = Math.min(frame.length, PCAP_SNAPLEN);
  const record = Buffer.allocUnsafe(PCAP_RECORD_HEADER_LENGTH + included);
  record.writeUInt32LE(seconds, 0);
  record.writeUInt32LE(fraction, 4);
  record.writeUInt32LE(included, 8);
  record.writeUInt32LE(frame.length, 12);
  record.set(frame.subarray(0, included), PCAP_RECORD_HEADER_LENGTH);
  return record;
}

/**
 * Writes Ethernet frames to a pcap file as they come, without blocking: each write only queues the record on a
 * file stream. When more than the buffer limit waits for the disk, frames are dropped and counted in `dropped`.
 * A failing stream (disk full, file gone) never throws or crashes the process: the writer remembers the first
 * error, stops writing, and `close()` rejects with it.
 */
export class PcapWriter {
  private framesWritten = 0;
  private framesDropped = 0;
  private error: Error | undefined;
  private closing: Promise<void> | undefined;

  private constructor(
    readonly path: string,
    private readonly stream: WriteStream,
    private readonly bufferLimit: number,
  ) {
    stream.on('error', (error) => {
      this.error ??= error;
    });
  }

  /** Creates (or truncates) the file at `path` and writes the global header. Rejects if it cannot be opened. */
  static async open(path: string, options: PcapWriterOptions = {}): Promise<PcapWriter> {
    const bufferLimit = options.bufferLimit ?? PCAP_BUFFER_LIMIT;
    if (!Number.isFinite(bufferLimit) || bufferLimit < 0) {
      throw new NetworkError(`pcap ${path}: bufferLimit must be a number >= 0 (got ${bufferLimit})`);
    }
    const stream = createWriteStream(path, { flags: 'w' });
    const writer = new PcapWriter(path, stream, bufferLimit);
    stream.write(pcapGlobalHeader());
    await new Promise<void>((resolve, reject) => {
      const onOpen = () => {
        stream.off('error', onError);
        resolve();
      };
      const onError = (error: Error) => {
        stream.off('open', onOpen);
        reject(new NetworkError(`pcap ${path}: cannot open the file: ${error.message}`, { cause: error }));
      };
      stream.once('open', onOpen);
      stream.once('error', onError);
    });
    return writer;
  }

  /** Records written (queued for the file), the global header not included. */
  get frames(): number {
    return this.framesWritten;
  }

  /** Frames not written: the buffer limit was reached, or the stream had failed. */
  get dropped(): number {
    return this.framesDropped;
  }

  /**
   * Appends `frame`, seen at `timeMs` milliseconds since the epoch (fractional: Date.now() or
   * performance.timeOrigin + performance.now()). Frames longer than PCAP_SNAPLEN are cut. Ignored after close().
   */
  write(frame: Uint8Array, timeMs: number): void {
    if (this.closing) return;
    if (this.error || this.stream.destroyed) {
      this.framesDropped++;
      return;
    }
    const length = PCAP_RECORD_HEADER_LENGTH + Math.min(frame.length, PCAP_SNAPLEN);
    if (this.stream.writableLength + length > this.bufferLimit) {
      this.framesDropped++;
      return;
    }
    this.stream.write(pcapRecord(frame, timeMs));
    this.framesWritten++;
  }

  /** Flushes and closes the file. Calling it again returns the same promise. Rejects if a write failed. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve, reject) => {
      const settle = () => {
        if (this.error) {
          reject(
            new NetworkError(`pcap ${this.path}: writing the capture failed: ${this.error.message}`, {
              cause: this.error,
            }),
          );
        } else {
          resolve();
        }
      };
      if (this.stream.closed) {
        settle();
        return;
      }
      this.stream.once('close', settle);
      if (!this.stream.destroyed && !this.stream.writableEnded) this.stream.end();
    });
    return this.closing;
  }
}

export interface PcapRecord {
  /** When the frame was seen, in milliseconds since the epoch (fractional). */
  timeMs: number;
  /** The bytes kept (at most the file's snaplen). */
  frame: Buffer;
  /** The frame's length on the wire. */
  originalLength: number;
}

/**
 * Parses a whole pcap file. Accepts both byte orders, microsecond and nanosecond timestamps. Throws an Error
 * naming the problem on a bad magic number or a truncated header or record.
 */
export function readPcap(data: Buffer): { linkType: number; records: PcapRecord[] } {
  if (data.length < PCAP_GLOBAL_HEADER_LENGTH) {
    throw new ConfigError(
      `pcap: truncated global header: ${data.length} bytes, expected ${PCAP_GLOBAL_HEADER_LENGTH}`,
    );
  }
  const magicLE = data.readUInt32LE(0);
  const magicBE = data.readUInt32BE(0);
  let littleEndian: boolean;
  let nanoseconds: boolean;
  if (magicLE === PCAP_MAGIC_MICROSECONDS || magicLE === PCAP_MAGIC_NANOSECONDS) {
    littleEndian = true;
    nanoseconds = magicLE === PCAP_MAGIC_NANOSECONDS;
  } else if (magicBE === PCAP_MAGIC_MICROSECONDS || magicBE === PCAP_MAGIC_NANOSECONDS) {
    littleEndian = false;
    nanoseconds = magicBE === PCAP_MAGIC_NANOSECONDS;
  } else {
    throw new ConfigError(
      `pcap: bad magic number 0x${magicBE.toString(16).padStart(8, '0')} ` +
        '(expected a1b2c3d4 or a1b23c4d in either byte order)',
    );
  }
  const u32 = (offset: number) => (littleEndian ? data.readUInt32LE(offset) : data.readUInt32BE(offset));
  // The low 16 bits are the link type; the upper bits may carry FCS information.
  const linkType = u32(20) & 0xffff;
  const divisor = nanoseconds ? 1_000_000 : 1_000;
  const records: PcapRecord[] = [];
  let offset = PCAP_GLOBAL_HEADER_LENGTH;
  while (offset < data.length) {
    const index = records.length;
    if (data.length - offset < PCAP_RECORD_HEADER_LENGTH) {
      throw new ConfigError(
        `pcap: truncated record header: record ${index} at byte ${offset} has ${data.length - offset} ` +
          `of ${PCAP_RECORD_HEADER_LENGTH} bytes`,
      );
    }
    const seconds = u32(offset);
    const fraction = u32(offset + 4);
    const included = u32(offset + 8);
    const originalLength = u32(offset + 12);
    const start = offset + PCAP_RECORD_HEADER_LENGTH;
    if (data.length - start < included) {
      throw new ConfigError(
        `pcap: truncated record: record ${index} at byte ${offset} declares ${included} bytes of data, ` +
          `${data.length - start} remain`,
      );
    }
    records.push({
      timeMs: seconds * 1000 + fraction / divisor,
      frame: Buffer.from(data.subarray(start, start + included)),
      originalLength,
    });
    offset = start + included;
  }
  return { linkType, records };
}

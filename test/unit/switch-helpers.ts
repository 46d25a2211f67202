import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import type { VirtualSwitch } from '../../src/network/switch.js';

/** Helpers of the switch tests: frames, records, and a client end of a switch port. */

export const BROADCAST = 'ff:ff:ff:ff:ff:ff';
export const MAC = {
  a: '52:54:00:00:00:0a',
  b: '52:54:00:00:00:0b',
  c: '52:54:00:00:00:0c',
  unknown: '52:54:00:00:00:99',
};

export const macBytes = (mac: string) => Buffer.from(mac.replaceAll(':', ''), 'hex');

/** An Ethernet frame: destination, source, EtherType, payload. */
export function frame(dst: string, src: string, payload: string): Buffer {
  return Buffer.concat([macBytes(dst), macBytes(src), Buffer.from([0x88, 0xb5]), Buffer.from(payload)]);
}

/** The stream record for a frame: its length as uint32 big-endian, then the frame. */
export function record(data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  return Buffer.concat([length, data]);
}

/** One switch port's client end: collects the frames it receives. */
export class Port {
  readonly frames: Buffer[] = [];
  /** When each frame arrived (performance.now()). */
  readonly times: number[] = [];
  private pending = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;

  constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.pending = Buffer.concat([this.pending, chunk]);
      while (this.pending.length >= 4) {
        const length = this.pending.readUInt32BE(0);
        if (this.pending.length < 4 + length) break;
        this.frames.push(Buffer.from(this.pending.subarray(4, 4 + length)));
        this.times.push(performance.now());
        this.pending = this.pending.subarray(4 + length);
      }
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  private wake() {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  /** Forgets the frames received so far. */
  clear(): void {
    this.frames.length = 0;
    this.times.length = 0;
  }

  /** The payloads (after the 14-byte header) of the frames received, as text. */
  payloads(): string[] {
    return this.frames.map((got) => got.subarray(14).toString());
  }

  send(data: Buffer): void {
    this.socket.write(record(data));
  }

  /** Waits until `count` frames have arrived (or fails after `timeoutMs`). */
  async received(count: number, timeoutMs = 2000): Promise<Buffer[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`expected ${count} frame(s), got ${this.frames.length}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.frames;
  }

  async waitClosed(timeoutMs = 2000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) assert.fail('the switch did not disconnect the port');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

export const settle = (ms = 100) => new Promise((resolve) => setTimeout(resolve, ms));

/** Connects `count` clients to the switch and waits until the switch has seen them all. */
export async function connectPorts(sw: VirtualSwitch, socketPath: string, count: number): Promise<Port[]> {
  const ports: Port[] = [];
  for (let i = 0; i < count; i++) {
    const socket = connect(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    ports.push(new Port(socket));
  }
  // The server side sees the connections a little after the clients do.
  for (let i = 0; i < 50 && sw.portCount < count; i++) await settle(10);
  assert.equal(sw.portCount, count);
  return ports;
}

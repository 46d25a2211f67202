import { rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { ConfigError, describeValue, NetworkError } from '../errors.js';
import { privateSocket } from '../util/private.js';
import {
  DelayLine,
  type FaultHandle,
  Faults,
  type ImpairOptions,
  type MachineRef,
  parseImpairOptions,
  parseMachine,
  parsePartition,
  type SwitchCounters,
  zeroCounters,
} from './faults.js';
import { NicIdentities } from './identities.js';
import { PcapWriter } from './pcap.js';

/** The group bit of the first destination byte: set for broadcast and multicast. */
const BROADCAST = 0x01;
/** The largest frame a NIC can send (64 KiB of payload plus headers, with room for offloads). */
const MAX_FRAME = 65_536 + 256;
/** Bytes a port may have waiting to be written to its socket; frames beyond are dropped and counted. */
export const PORT_QUEUE_LIMIT = 1024 * 1024;
/** Bytes of delayed frames (delay, jitter, rate cap) a port may hold; beyond, frames count as droppedByQueue. */
export const PORT_DELAYED_LIMIT = 8 * 1024 * 1024;
/** The longest a frame held back for reordering waits for the next frame on its path to overtake it. */
export const REORDER_HOLD_MS = 50;

export interface PortStats extends SwitchCounters {
  /** The machine's name, or "port <n>" while the port has sent nothing from a claimed MAC. */
  port: string;
  machine: string | undefined;
  /** Bytes waiting to be written to the port's socket now (at most PORT_QUEUE_LIMIT). */
  queuedBytes: number;
}

export interface SwitchStats {
  /** Since the switch was made, ports gone included. */
  total: SwitchCounters;
  /** The ports connected now. */
  ports: PortStats[];
}

/** Sees a frame (do not modify it) and when it arrived, in milliseconds since the epoch (fractional). */
export type FrameTap = (frame: Buffer, timeMs: number) => void;

export interface Capture {
  readonly path: string;
  /** Stops capturing and closes the file. Calling it again does nothing. */
  stop(): Promise<void>;
}

export type { FaultHandle, ImpairOptions, MachineRef, SwitchCounters } from './faults.js';

interface Port {
  readonly id: number;
  readonly socket: Socket;
  /** The owner of the claimed MAC this port last sent from. */
  machine: string | undefined;
  readonly counters: SwitchCounters;
  readonly line: DelayLine;
  /** The frame held back for reordering on the path from each sending port (by port id). */
  readonly held: Map<number, () => void>;
}

/** Only VirtualSwitch.create makes a switch. */
const CREATE = Symbol('VirtualSwitch.create');

/**
 * A learning Ethernet switch in the host process. Each QEMU NIC connects with
 * `-netdev stream` to the switch's unix socket and exchanges frames, each preceded by its
 * length as a 32-bit big-endian number. Frames go to the port that last sent from the
 * destination MAC, or to every other port when the destination is unknown or a group address.
 *
 * Faults, changeable at run time: `partition`, `isolate`, `impair`, `heal` (policy in faults.ts).
 * A port is known as the machine that claimed (`claimMac`) the MAC it sends from. Each port has a
 * bounded queue: a port that does not read loses frames (counted) instead of growing memory.
 */
export class VirtualSwitch implements AsyncDisposable {
  private readonly ports = new Set<Port>();
  private readonly macTable = new Map<string, Port>();
  /** MACs and addresses of the machines plugged in, with the machine using each. */
  readonly identities: NicIdentities;
  private readonly faults = new Faults();
  private readonly taps = new Set<FrameTap>();
  private readonly captures = new Set<Capture>();
  private readonly totals = zeroCounters();
  private nextPortId = 1;
  private closed = false;

  private constructor(
    token: typeof CREATE,
    readonly name: string,
    readonly socketPath: string,
    private readonly server: Server,
  ) {
    // TypeScript hides the constructor; from JavaScript `new VirtualSwitch()` would crash later.
    if (token !== CREATE)
      throw new ConfigError('VirtualSwitch: use `await VirtualSwitch.create(name, socketPath)`');
    this.identities = new NicIdentities(name);
    server.on('connection', (socket) => this.attach(socket));
  }

  static async create(name: string, socketPath: string): Promise<VirtualSwitch> {
    if (typeof name !== 'string' || name === '') {
      throw new ConfigError(
        `VirtualSwitch.create: name must be a non-empty string (got ${describeValue(name)})`,
      );
    }
    if (typeof socketPath !== 'string' || socketPath === '' || Buffer.byteLength(socketPath) > 107) {
      throw new ConfigError(
        `VirtualSwitch.create: socketPath must be a path of 1 to 107 bytes, the limit of a unix socket (got ${describeValue(socketPath)})`,
      );
    }
    await rm(socketPath, { force: true });
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) =>
        reject(new NetworkError(`switch ${name}: cannot listen on ${socketPath}: ${error.message}`)),
      );
      server.listen(socketPath, resolve);
    });
    // Node makes it under the umask: a machine on the switch sees every frame, and may send any.
    privateSocket(socketPath);
    return new VirtualSwitch(CREATE, name, socketPath, server);
  }

  /**
   * Reserves `mac` (and `address`, "a.b.c.d/len") for the machine named `machine` on this switch;
   * returns the release. Frames from the MAC count as that machine's for faults. Throws a
   * ConfigError when another machine on the switch has the MAC or the address.
   */
  claimMac(mac: string, machine: string, address?: string): () => void {
    return this.identities.claim(mac, machine, address);
  }

  get portCount(): number {
    return this.ports.size;
  }

  /** Frames taken in and switched (not per target port: see `stats()` for that). */
  get framesForwarded(): number {
    return this.totals.framesReceived;
  }

  /**
   * Machines in different groups cannot exchange frames (unicast or broadcast, both ways); within
   * a group they can. Machines named in no group form one more group together, so `[[a, b]]` cuts
   * a and b off from the rest. Frames from MACs no machine claimed pass. Names must be machines on
   * this switch now. Several partitions at once: a frame passes only if none blocks it.
   */
  partition(groups: Array<Array<MachineRef>>): FaultHandle {
    const what = `switch ${this.name} partition`;
    return this.faults.addPartition(parsePartition(groups, this.machineNames(), what));
  }

  /** `machine` alone on one side, every other machine on the other. */
  isolate(machine: MachineRef): FaultHandle {
    const name = parseMachine(machine, this.machineNames(), `switch ${this.name} isolate`);
    return this.faults.addPartition([[name]]);
  }

  /**
   * Impairs the frames matched by `machines` (from or to any), `from` (sent by) and `to`
   * (delivered to), all given selectors together; with none, every frame on the VLAN. Effects
   * apply per frame and target port: loss, duplication, delay ± jitter, reordering (held until
   * the next frame on its path or REORDER_HOLD_MS), a rate cap per path. The `seed` makes the
   * random choices repeatable; by default it is a hash of the options.
   */
  impair(options: ImpairOptions): FaultHandle {
    const what = `switch ${this.name} impair`;
    return this.faults.addImpairment(parseImpairOptions(options, this.machineNames(), what));
  }

  /** Removes every partition and impairment. Frames already delayed or held still arrive. */
  heal(): void {
    this.faults.clear();
  }

  /** Counters per connected port and in total. */
  stats(): SwitchStats {
    return {
      total: { ...this.totals },
      ports: [...this.ports].map((port) => ({
        port: port.machine ?? `port ${port.id}`,
        machine: port.machine,
        ...port.counters,
        queuedBytes: port.socket.writableLength,
      })),
    };
  }

  /**
   * Calls `tap` with every frame the switch receives, as received: before partitions and
   * impairments, runts (under 14 bytes) excluded. Returns the removal. A tap that throws is removed.
   */
  addTap(tap: FrameTap): () => void {
    if (typeof tap !== 'function') {
      throw new ConfigError(`switch ${this.name} addTap: tap must be a function (got ${describeValue(tap)})`);
    }
    this.taps.add(tap);
    return () => void this.taps.delete(tap);
  }

  /** Writes every frame the switch receives (see addTap) to a pcap file at `path` until stopped. */
  async capture(path: string): Promise<Capture> {
    if (typeof path !== 'string' || path === '') {
      throw new ConfigError(
        `switch ${this.name} capture: path must be a non-empty string (got ${describeValue(path)})`,
      );
    }
    if (this.closed) throw new NetworkError(`switch ${this.name} capture: the switch is closed`);
    const writer = await PcapWriter.open(path);
    const removeTap = this.addTap((frame, timeMs) => writer.write(frame, timeMs));
    let stopped: Promise<void> | undefined;
    const capture: Capture = {
      path,
      stop: () => {
        stopped ??= (async () => {
          removeTap();
          this.captures.delete(capture);
          await writer.close();
        })();
        return stopped;
      },
    };
    this.captures.add(capture);
    if (this.closed) await capture.stop();
    return capture;
  }

  private machineNames(): Set<string> {
    return this.identities.machines();
  }

  private attach(socket: Socket): void {
    const port: Port = {
      id: this.nextPortId++,
      socket,
      machine: undefined,
      counters: zeroCounters(),
      line: new DelayLine((record) => this.write(port, record)),
      held: new Map(),
    };
    this.ports.add(port);
    let pending: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (pending.length >= 4) {
        const length = pending.readUInt32BE(0);
        if (length > MAX_FRAME) {
          // Not a frame QEMU would send: drop the port rather than buffer without bound.
          socket.destroy();
          return;
        }
        if (pending.length < 4 + length) break;
        this.forward(port, pending.subarray(0, 4 + length));
        pending = pending.subarray(4 + length);
      }
    });
    const detach = () => {
      if (!this.ports.delete(port)) return;
      this.forget(port);
      for (const [mac, learned] of this.macTable) if (learned === port) this.macTable.delete(mac);
      this.faults.forgetPort(port.id);
    };
    socket.on('close', detach);
    socket.on('error', detach);
  }

  /** Drops what a port still has delayed or held back. */
  private forget(port: Port): void {
    port.line.clear();
    for (const release of port.held.values()) release();
    port.held.clear();
  }

  /** `record` is the length prefix and the frame, forwarded as received. */
  private forward(from: Port, record: Buffer): void {
    const frame = record.subarray(4);
    if (frame.length < 14) return;
    const now = performance.now();
    this.count(from, 'framesReceived', 1);
    this.count(from, 'bytesReceived', frame.length);
    for (const tap of this.taps) this.callTap(tap, frame, performance.timeOrigin + now);
    const source = frame.subarray(6, 12).toString('hex');
    const sender = this.identities.machineOfKey(source);
    if (sender !== undefined) from.machine = sender;
    const destination = frame.subarray(0, 6);
    this.macTable.set(source, from);
    const known =
      (destination[0] ?? 0) & BROADCAST ? undefined : this.macTable.get(destination.toString('hex'));
    const targets = known ? [known] : [...this.ports];
    for (const port of targets) {
      if (port !== from && !port.socket.destroyed) this.deliver(from, sender, port, record, now);
    }
  }

  private callTap(tap: FrameTap, frame: Buffer, timeMs: number): void {
    try {
      tap(frame, timeMs);
    } catch (error) {
      this.taps.delete(tap);
      process.emitWarning(`switch ${this.name}: a frame tap threw and was removed: ${String(error)}`);
    }
  }

  /** Applies the faults to one frame on its way from `from` (sent by machine `sender`) to `to`. */
  private deliver(from: Port, sender: string | undefined, to: Port, record: Buffer, now: number): void {
    if (!this.faults.active) {
      this.write(to, record);
      return;
    }
    if (to.line.bytes + record.length > PORT_DELAYED_LIMIT) {
      this.count(to, 'droppedByQueue', 1);
      return;
    }
    const verdict = this.faults.verdict(sender, to.machine, `${from.id}>${to.id}`, record.length - 4, now);
    const held = to.held.get(from.id);
    if (verdict.drop) {
      this.count(to, 'droppedByFault', 1);
    } else if (verdict.hold && !held) {
      // Held back until the next frame on this path has gone, or REORDER_HOLD_MS.
      const kept = Buffer.from(record);
      const timer = setTimeout(() => release(), REORDER_HOLD_MS);
      const release = () => {
        clearTimeout(timer);
        to.held.delete(from.id);
        if (!this.closed && this.ports.has(to)) this.send(to, kept, verdict.copies, verdict.delayMs);
      };
      to.held.set(from.id, release);
    } else {
      this.send(to, record, verdict.copies, verdict.delayMs);
      held?.();
    }
  }

  private send(to: Port, record: Buffer, copies: number, delayMs: number): void {
    if (copies > 1) this.count(to, 'duplicated', copies - 1);
    // What waits is copied: a slice would keep the whole chunk it came in alive.
    const kept = delayMs > 0 ? Buffer.from(record) : record;
    for (let copy = 0; copy < copies; copy++) {
      if (delayMs <= 0) {
        this.write(to, record);
      } else {
        this.count(to, 'delayed', 1);
        to.line.add(performance.now() + delayMs, kept);
      }
    }
  }

  /** Writes to the port's socket, or drops the frame when the port's queue is full. */
  private write(to: Port, record: Buffer): void {
    if (to.socket.destroyed) return;
    if (to.socket.writableLength + record.length > PORT_QUEUE_LIMIT) {
      this.count(to, 'droppedByQueue', 1);
    } else {
      to.socket.write(to.socket.writableLength > 0 ? Buffer.from(record) : record);
      this.count(to, 'framesForwarded', 1);
      this.count(to, 'bytesForwarded', record.length - 4);
    }
  }

  private count(port: Port, counter: keyof SwitchCounters, amount: number): void {
    port.counters[counter] += amount;
    this.totals[counter] += amount;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Stops captures, drops delayed and held frames, disconnects every port, removes the socket. */
  async close(): Promise<void> {
    this.closed = true;
    this.faults.clear();
    this.taps.clear();
    await Promise.allSettled([...this.captures].map((capture) => capture.stop()));
    for (const port of this.ports) {
      this.forget(port);
      port.socket.destroy();
    }
    this.ports.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.socketPath, { force: true });
  }
}

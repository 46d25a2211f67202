import { rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { ConfigError, describeValue, NetworkError } from '../errors.js';

/** The group bit of the first destination byte: set for broadcast and multicast. */
const BROADCAST = 0x01;
/** The largest frame a NIC can send (64 KiB of payload plus headers, with room for offloads). */
const MAX_FRAME = 65_536 + 256;

/**
 * A learning Ethernet switch in the host process. Each QEMU NIC connects with
 * `-netdev stream` to the switch's unix socket and exchanges frames, each preceded by its
 * length as a 32-bit big-endian number. Frames go to the port that last sent from the
 * destination MAC, or to every other port when the destination is unknown or a group address.
 */
export class VirtualSwitch implements AsyncDisposable {
  private readonly ports = new Set<Socket>();
  private readonly macTable = new Map<string, Socket>();
  /** MACs of the machines plugged in, with who uses each: two NICs with one MAC lose frames. */
  private readonly claimed = new Map<string, string>();
  /** Frames forwarded, for diagnostics. */
  framesForwarded = 0;

  private constructor(
    readonly name: string,
    readonly socketPath: string,
    private readonly server: Server,
  ) {
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
    return new VirtualSwitch(name, socketPath, server);
  }

  /**
   * Reserves `mac` for `owner` on this switch; returns the release. Throws a ConfigError when
   * another machine on the switch has it (two machines of the same name, or clones of one
   * snapshot that kept its MAC).
   */
  claimMac(mac: string, owner: string): () => void {
    const key = mac.toLowerCase();
    const holder = this.claimed.get(key);
    if (holder !== undefined) {
      throw new ConfigError(
        `switch ${this.name}: MAC ${mac} of machine ${owner} is already used by machine ${holder} (machines on one switch need distinct names, and clones need an address to get a MAC of their own)`,
      );
    }
    this.claimed.set(key, owner);
    return () => {
      if (this.claimed.get(key) === owner) this.claimed.delete(key);
    };
  }

  get portCount(): number {
    return this.ports.size;
  }

  private attach(socket: Socket): void {
    this.ports.add(socket);
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
        this.forward(socket, pending.subarray(0, 4 + length));
        pending = pending.subarray(4 + length);
      }
    });
    const detach = () => {
      this.ports.delete(socket);
      for (const [mac, port] of this.macTable) if (port === socket) this.macTable.delete(mac);
    };
    socket.on('close', detach);
    socket.on('error', detach);
  }

  /** `record` is the length prefix and the frame, forwarded as received. */
  private forward(from: Socket, record: Buffer): void {
    const frame = record.subarray(4);
    if (frame.length < 14) return;
    const destination = frame.subarray(0, 6);
    this.macTable.set(frame.subarray(6, 12).toString('hex'), from);
    const known =
      (destination[0] ?? 0) & BROADCAST ? undefined : this.macTable.get(destination.toString('hex'));
    const targets = known ? [known] : [...this.ports].filter((port) => port !== from);
    for (const port of targets) {
      if (port !== from && !port.destroyed) port.write(record);
    }
    this.framesForwarded++;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async close(): Promise<void> {
    for (const port of this.ports) port.destroy();
    this.ports.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.socketPath, { force: true });
  }
}

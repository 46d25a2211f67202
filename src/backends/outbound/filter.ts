import { isIPv4, isIPv6 } from 'node:net';

/**
 * Which of the guest's frames the outbound relay passes to QEMU's user-mode network (slirp),
 * which turns each flow into a socket of the host's: its own host address in the NIC's subnet
 * leads to the host's loopback, and so would a destination of 127.0.0.1 (which a guest's root can
 * route out through its NIC), 0.0.0.0, ::1, ::ffff:127.0.0.1 or one of the host's own addresses.
 * So the relay refuses every frame to:
 *
 *   IPv4: 0/8, 127/8, 169.254/16 (link-local: a cloud host's metadata service), multicast,
 *     the NIC's own subnet (slirp's host address, the gateway, is the host's loopback) except
 *     UDP to the resolver's port 53 (slirp asks the host's resolver), the host's addresses;
 *   IPv6: ::/96 (:: and ::1), ::ffff:0:0/96 (IPv4-mapped), 64:ff9b::/96 (NAT64), the host's
 *     addresses, and link-local or multicast but for ICMPv6 (slirp's IPv6 is off anyway);
 *   any other ethertype than IPv4, IPv6, ARP and RARP.
 */
export interface OutboundRules {
  /** The guest NIC's IPv4 subnet, e.g. "10.0.3.0/24". */
  subnet: string;
  /** slirp's resolver address in it (UDP port 53 only). */
  nameserver: string;
  /** The host's own addresses, IPv4 and IPv6. */
  hostAddresses: string[];
}

type Prefix4 = { network: number; mask: number };
type Prefix6 = { bytes: Buffer; bits: number };

export interface CompiledRules {
  closed4: Prefix4[];
  subnet4: Prefix4;
  nameserver4: number;
  closed6: Prefix6[];
}

const ipv4 = (address: string) => address.split('.').reduce((value, part) => value * 256 + Number(part), 0);

function prefix4(cidr: string): Prefix4 {
  const [address = '', bits = '32'] = cidr.split('/');
  const mask = Number(bits) === 0 ? 0 : (0xffffffff << (32 - Number(bits))) >>> 0;
  return { network: (ipv4(address) & mask) >>> 0, mask };
}

/** An IPv6 address as 16 bytes (no zone, no embedded IPv4 dotted form). */
function ipv6(address: string): Buffer {
  const [head = '', tail] = address.split('::');
  const groups = (part: string | undefined) => (part ? part.split(':') : []);
  const left = groups(head);
  const right = groups(tail);
  const all =
    tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  const bytes = Buffer.alloc(16);
  for (const [index, group] of all.entries()) bytes.writeUInt16BE(Number.parseInt(group, 16), index * 2);
  return bytes;
}

function prefix6(cidr: string): Prefix6 {
  const [address = '', bits = '128'] = cidr.split('/');
  return { bytes: ipv6(address), bits: Number(bits) };
}

const within4 = (address: number, prefix: Prefix4) => (address & prefix.mask) >>> 0 === prefix.network;

function within6(frame: Buffer, offset: number, prefix: Prefix6): boolean {
  const whole = prefix.bits >> 3;
  if (frame.compare(prefix.bytes, 0, whole, offset, offset + whole) !== 0) return false;
  const rest = prefix.bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((frame[offset + whole] as number) & mask) === ((prefix.bytes[whole] as number) & mask);
}

export function compileRules(rules: OutboundRules): CompiledRules {
  const hosts4 = rules.hostAddresses.filter((address) => isIPv4(address)).map((a) => `${a}/32`);
  const hosts6 = rules.hostAddresses
    .map((address) => address.replace(/%.*$/, ''))
    .filter((address) => isIPv6(address) && !address.includes('.'))
    .map((a) => `${a}/128`);
  return {
    closed4: ['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4', ...hosts4].map(prefix4),
    subnet4: prefix4(rules.subnet),
    nameserver4: ipv4(rules.nameserver),
    closed6: ['::/96', '::ffff:0:0/96', '64:ff9b::/96', ...hosts6].map(prefix6),
  };
}

const LINK_LOCAL6 = prefix6('fe80::/10');
const MULTICAST6 = prefix6('ff00::/8');
const ETHERNET = 14;
const UDP = 17;
const ICMP6 = 58;

/** Why a guest frame is refused, or undefined when it may pass. */
export function refusal(frame: Buffer, rules: CompiledRules): string | undefined {
  if (frame.length < ETHERNET) return 'runt frame';
  const type = frame.readUInt16BE(12);
  if (type === 0x0806 || type === 0x8035) return undefined; // ARP, slirp answers; RARP (QEMU's announce after a restore), slirp drops
  if (type === 0x0800) return refusal4(frame, rules);
  if (type === 0x86dd) return refusal6(frame, rules);
  return `ethertype 0x${type.toString(16)}`;
}

function refusal4(frame: Buffer, rules: CompiledRules): string | undefined {
  if (frame.length < ETHERNET + 20) return 'short IPv4 header';
  const destination = frame.readUInt32BE(ETHERNET + 16);
  const shown = () => [24, 16, 8, 0].map((shift) => (destination >>> shift) & 0xff).join('.');
  if (rules.closed4.some((prefix) => within4(destination, prefix))) return `IPv4 to ${shown()}`;
  if (within4(destination, rules.subnet4)) {
    const headerLength = ((frame[ETHERNET] as number) & 0x0f) * 4;
    const firstFragment = (frame.readUInt16BE(ETHERNET + 6) & 0x1fff) === 0;
    const port =
      frame.length >= ETHERNET + headerLength + 4 ? frame.readUInt16BE(ETHERNET + headerLength + 2) : 0;
    const dns =
      destination === rules.nameserver4 && frame[ETHERNET + 9] === UDP && firstFragment && port === 53;
    if (!dns) return `IPv4 to ${shown()} on the NIC's own subnet`;
  }
  return undefined;
}

function refusal6(frame: Buffer, rules: CompiledRules): string | undefined {
  if (frame.length < ETHERNET + 40) return 'short IPv6 header';
  const at = ETHERNET + 24;
  const shown = () =>
    frame
      .subarray(at, at + 16)
      .toString('hex')
      .replace(/(.{4})(?!$)/g, '$1:');
  if (rules.closed6.some((prefix) => within6(frame, at, prefix))) return `IPv6 to ${shown()}`;
  const local = within6(frame, at, LINK_LOCAL6) || within6(frame, at, MULTICAST6);
  if (local && frame[ETHERNET + 6] !== ICMP6) return `IPv6 to link-local or multicast ${shown()}`;
  return undefined;
}

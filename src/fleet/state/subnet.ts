import { ConfigError } from '../../errors.js';

const toNumber = (address: string) =>
  address.split('.').reduce((value, part) => value * 256 + Number(part), 0);
const toAddress = (value: number) =>
  [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');

export interface Subnet {
  /** As given, normalised to its network address: "10.20.0.0/24". */
  cidr: string;
  prefix: number;
  gateway: string;
}

const block = (cidr: string): Subnet => {
  const [address, prefix] = cidr.split('/') as [string, string];
  return { cidr, prefix: Number(prefix), gateway: toAddress(toNumber(address) + 1) };
};
/** RFC 1918 private unicast space: where tenant networks live. */
const PRIVATE = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'].map(block);
/** vmkit's own networks inside every instance: a tenant subnet there would shadow them. */
const RESERVED = [
  { net: block('10.0.2.0/24'), use: "the outbound NIC's network (eth2)" },
  { net: block('169.254.169.0/24'), use: "the metadata NIC's network (eth1)" },
];

/**
 * A new tenant's subnet: an IPv4 network of /16 to /29 in private unicast space (10/8,
 * 172.16/12, 192.168/16) that does not overlap vmkit's own networks; its first host is the
 * gateway. (Subnets already stored are read with parseSubnet, which checks only the form.)
 */
export function parseTenantSubnet(text: string): Subnet {
  const subnet = parseSubnet(text);
  if (!PRIVATE.some((range) => contains(range, subnet))) {
    throw new ConfigError(
      `subnet ${subnet.cidr} is not private unicast space: use a network inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16`,
    );
  }
  const taken = RESERVED.find((reserved) => overlaps(reserved.net, subnet));
  if (taken) throw new ConfigError(`subnet ${subnet.cidr} overlaps ${taken.net.cidr}, ${taken.use}`);
  return subnet;
}

/** A subnet's form: an IPv4 network of /16 to /29, normalised to its network address. */
export function parseSubnet(text: string): Subnet {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(text);
  const octets = match?.[1]?.split('.').map(Number) ?? [];
  const prefix = Number(match?.[2]);
  if (!match || octets.some((octet) => octet > 255) || prefix < 16 || prefix > 29) {
    throw new ConfigError(
      `subnet ${JSON.stringify(text)} must be an IPv4 network from /16 to /29, like 10.20.0.0/24`,
    );
  }
  const size = 2 ** (32 - prefix);
  const network = Math.floor(toNumber(match[1] as string) / size) * size;
  return { cidr: `${toAddress(network)}/${prefix}`, prefix, gateway: toAddress(network + 1) };
}

/**
 * A cluster node's part of every tenant subnet: the `index`th of `of` equal runs of its host
 * addresses, so that instances of one tenant on different nodes never get the same address.
 */
export interface AddressSlice {
  index: number;
  of: number;
}

/**
 * The first host address (after the gateway) not in `used`, with its prefix, within `slice` when
 * given; undefined when full.
 */
export function nextAddress(subnet: Subnet, used: Set<string>, slice?: AddressSlice): string | undefined {
  const size = 2 ** (32 - subnet.prefix);
  const network = toNumber(subnet.cidr.split('/')[0] as string);
  const hosts = size - 3; // not the network, the gateway nor the broadcast address
  const per = slice ? Math.floor(hosts / slice.of) : hosts;
  const first = 2 + (slice ? slice.index * per : 0);
  for (let offset = first; offset < first + per; offset++) {
    const address = `${toAddress(network + offset)}/${subnet.prefix}`;
    if (!used.has(address)) return address;
  }
  return undefined;
}

const range = (s: Subnet) => {
  const start = toNumber(s.cidr.split('/')[0] as string);
  return [start, start + 2 ** (32 - s.prefix)] as const;
};

/** Whether two subnets share any address. */
export function overlaps(a: Subnet, b: Subnet): boolean {
  const [a0, a1] = range(a);
  const [b0, b1] = range(b);
  return a0 < b1 && b0 < a1;
}

/** Whether `inner` lies wholly inside `outer`. */
function contains(outer: Subnet, inner: Subnet): boolean {
  const [o0, o1] = range(outer);
  const [i0, i1] = range(inner);
  return o0 <= i0 && i1 <= o1;
}

import { ConfigError } from '../errors.js';

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

/** A tenant subnet: an IPv4 network of /16 to /29, its first host the gateway. */
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

/** The first host address (after the gateway) not in `used`, with its prefix; undefined when full. */
export function nextAddress(subnet: Subnet, used: Set<string>): string | undefined {
  const size = 2 ** (32 - subnet.prefix);
  const network = toNumber(subnet.cidr.split('/')[0] as string);
  for (let offset = 2; offset < size - 1; offset++) {
    const address = `${toAddress(network + offset)}/${subnet.prefix}`;
    if (!used.has(address)) return address;
  }
  return undefined;
}

/** Whether two subnets share any address. */
export function overlaps(a: Subnet, b: Subnet): boolean {
  const range = (s: Subnet) => {
    const start = toNumber(s.cidr.split('/')[0] as string);
    return [start, start + 2 ** (32 - s.prefix)] as const;
  };
  const [a0, a1] = range(a);
  const [b0, b1] = range(b);
  return a0 < b1 && b0 < a1;
}

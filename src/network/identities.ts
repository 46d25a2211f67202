import { ConfigError } from '../errors.js';

/** A MAC as 12 lowercase hex digits, whatever separators it was written with. */
export const macKey = (mac: string) => mac.toLowerCase().replace(/[:-]/g, '');

interface Claim {
  machine: string;
  /** Without prefix length, e.g. "10.0.0.2". */
  address?: string;
}

const ipv4ToNumber = (ip: string) => ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
const numberToIpv4 = (n: number) => [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');

/**
 * Who uses which MAC and address on one switch. Frames are attributed to machines by their MAC
 * (for faults and stats), and two NICs of one identity on one switch would steal each other's
 * frames: a claim that clashes is refused, and `freeAddress` finds a host address nobody holds.
 */
export class NicIdentities {
  private readonly byMac = new Map<string, Claim>();

  constructor(private readonly switchName: string) {}

  /** The machine holding `mac`, if any. */
  holderOf(mac: string): string | undefined {
    return this.byMac.get(macKey(mac))?.machine;
  }

  machineOfKey(key: string): string | undefined {
    return this.byMac.get(key)?.machine;
  }

  machines(): Set<string> {
    return new Set([...this.byMac.values()].map((claim) => claim.machine));
  }

  /** Reserves `mac` (and `address`, "a.b.c.d/len") for `machine`; returns the release. */
  claim(mac: string, machine: string, address?: string): () => void {
    const key = macKey(mac);
    const holder = this.byMac.get(key);
    if (holder !== undefined) {
      throw new ConfigError(
        `switch ${this.switchName}: MAC ${mac} of machine ${machine} is already used by machine ${holder.machine} (machines on one switch need distinct names)`,
      );
    }
    const ip = address?.split('/')[0];
    const sharer = ip === undefined ? undefined : [...this.byMac.values()].find((c) => c.address === ip);
    if (sharer) {
      throw new ConfigError(
        `switch ${this.switchName}: address ${ip} of machine ${machine} is already used by machine ${sharer.machine}`,
      );
    }
    const claim: Claim = { machine, address: ip };
    this.byMac.set(key, claim);
    return () => {
      if (this.byMac.get(key) === claim) this.byMac.delete(key);
    };
  }

  /**
   * The lowest host address of `like`'s subnet ("a.b.c.d/len") that no machine on this switch
   * holds, with the same prefix length.
   */
  freeAddress(like: string): string {
    const [ip = '', prefixText = '32'] = like.split('/');
    const prefix = Number(prefixText);
    const size = 2 ** (32 - prefix);
    const network = ipv4ToNumber(ip) - (ipv4ToNumber(ip) % size);
    const taken = new Set(
      [...this.byMac.values()].flatMap((claim) => (claim.address ? [claim.address] : [])),
    );
    for (let host = 1; host < size - 1; host++) {
      const candidate = numberToIpv4(network + host);
      if (!taken.has(candidate)) return `${candidate}/${prefix}`;
    }
    throw new ConfigError(
      `switch ${this.switchName}: every address of ${numberToIpv4(network)}/${prefix} is taken; give the clone an address of another subnet`,
    );
  }
}

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileRules, refusal } from '../../src/backends/outbound/filter.js';

const rules = compileRules({
  subnet: '10.0.3.0/24',
  nameserver: '10.0.3.3',
  hostAddresses: ['192.0.2.2', 'fd00::2', 'fe80::fc:ff:fe00:1%eth0', '127.0.0.1', '::1'],
});

const ethernet = (type: number) => {
  const header = Buffer.alloc(14);
  header.writeUInt16BE(type, 12);
  return header;
};

/** An IPv4 frame to `destination` with a UDP or TCP header to `port`. */
function ipv4(destination: string, protocol: number, port: number, fragmentOffset = 0): Buffer {
  const ip = Buffer.alloc(28);
  ip[0] = 0x45;
  ip.writeUInt16BE(fragmentOffset, 6);
  ip[9] = protocol;
  Buffer.from([10, 0, 3, 15]).copy(ip, 12);
  Buffer.from(destination.split('.').map(Number)).copy(ip, 16);
  ip.writeUInt16BE(port, 22);
  return Buffer.concat([ethernet(0x0800), ip]);
}

/** An IPv6 frame to `hex` (32 hex digits) with next header `next`. */
function ipv6(hex: string, next: number): Buffer {
  const ip = Buffer.alloc(48);
  ip[0] = 0x60;
  ip[6] = next;
  Buffer.from(hex, 'hex').copy(ip, 24);
  return Buffer.concat([ethernet(0x86dd), ip]);
}

const TCP = 6;
const UDP = 17;

describe('outbound frame filter', () => {
  it('passes frames to the network beyond the host, ARP, and DNS to the resolver', () => {
    assert.equal(refusal(ipv4('198.51.100.7', TCP, 443), rules), undefined);
    assert.equal(refusal(ipv4('10.0.2.2', TCP, 80), rules), undefined); // another network's 10.0.2.2
    assert.equal(refusal(ethernet(0x0806), rules), undefined);
    assert.equal(refusal(ipv4('10.0.3.3', UDP, 53), rules), undefined);
    assert.equal(refusal(ipv6(`20010db8${'0'.repeat(23)}1`, TCP), rules), undefined);
    assert.equal(refusal(ipv6(`fe80${'0'.repeat(27)}1`, 58), rules), undefined); // neighbour discovery
  });

  it("refuses the host's loopback, unspecified and own addresses, however written", () => {
    for (const address of [
      '127.0.0.1',
      '127.1.2.3',
      '0.0.0.0',
      '192.0.2.2',
      '169.254.169.254',
      '224.0.0.251',
    ]) {
      assert.match(refusal(ipv4(address, TCP, 22), rules) ?? '', /IPv4 to/, address);
    }
    const v6 = [
      `${'0'.repeat(31)}1`, // ::1
      '0'.repeat(32), // ::
      `${'0'.repeat(20)}ffff7f000001`, // ::ffff:127.0.0.1
      `0064ff9b${'0'.repeat(16)}7f000001`, // 64:ff9b::127.0.0.1
      `fd00${'0'.repeat(27)}2`, // the host's fd00::2
    ];
    for (const hex of v6) assert.match(refusal(ipv6(hex, TCP), rules) ?? '', /IPv6 to/, hex);
    assert.match(refusal(ipv6(`fe80${'0'.repeat(16)}00fcfffe000001`, TCP), rules) ?? '', /IPv6 to/);
    assert.match(refusal(ipv6(`fe80${'0'.repeat(27)}9`, UDP), rules) ?? '', /link-local/);
  });

  it("refuses the NIC's own subnet (the gateway) but for UDP port 53 of the resolver", () => {
    assert.match(refusal(ipv4('10.0.3.2', TCP, 8080), rules) ?? '', /own subnet/);
    assert.match(refusal(ipv4('10.0.3.3', TCP, 53), rules) ?? '', /own subnet/);
    assert.match(refusal(ipv4('10.0.3.3', UDP, 8080), rules) ?? '', /own subnet/);
    assert.match(refusal(ipv4('10.0.3.3', UDP, 53, 100), rules) ?? '', /own subnet/); // a later fragment
  });

  it('refuses other ethertypes and runt frames', () => {
    assert.match(refusal(ethernet(0x8100), rules) ?? '', /ethertype 0x8100/);
    assert.equal(refusal(Buffer.alloc(6), rules), 'runt frame');
  });
});

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { PCAP_SNAPLEN, PcapWriter, pcapGlobalHeader, pcapRecord, readPcap } from '../../src/network/pcap.js';

const run = promisify(execFile);

/** An Ethernet frame: destination, source, EtherType 0x88b5 (local experimental), then `payload`. */
function frame(payload: Buffer | string, src = 0x0a): Buffer {
  const header = Buffer.from([
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0x52,
    0x54,
    0x00,
    0x00,
    0x00,
    src,
    0x88,
    0xb5,
  ]);
  return Buffer.concat([header, Buffer.from(payload)]);
}

/** Finds tcpdump on PATH, or undefined. */
async function findTcpdump(): Promise<string | undefined> {
  try {
    const { stdout } = await run('which', ['tcpdump']);
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmkit-pcap-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A pcap file written by hand in big-endian order, as a big-endian host's libpcap writes it. */
function bigEndianFile(
  records: { sec: number; frac: number; data: Buffer; orig?: number }[],
  magic = 0xa1b2c3d4,
) {
  const header = Buffer.alloc(24);
  header.writeUInt32BE(magic, 0);
  header.writeUInt16BE(2, 4);
  header.writeUInt16BE(4, 6);
  header.writeInt32BE(0, 8);
  header.writeUInt32BE(0, 12);
  header.writeUInt32BE(65535, 16);
  header.writeUInt32BE(1, 20);
  const parts: Buffer[] = [header];
  for (const { sec, frac, data, orig } of records) {
    const record = Buffer.alloc(16);
    record.writeUInt32BE(sec, 0);
    record.writeUInt32BE(frac, 4);
    record.writeUInt32BE(data.length, 8);
    record.writeUInt32BE(orig ?? data.length, 12);
    parts.push(record, data);
  }
  return Buffer.concat(parts);
}

describe('pcap', () => {
  test('golden bytes of the global header', () => {
    assert.equal(
      pcapGlobalHeader().toString('hex'),
      [
        'd4c3b2a1', // magic 0xa1b2c3d4, little-endian
        '0200', // version_major 2
        '0400', // version_minor 4
        '00000000', // thiszone
        '00000000', // sigfigs
        '00000400', // snaplen 262144
        '01000000', // linktype 1 (Ethernet)
      ].join(''),
    );
  });

  test('golden bytes of a record header', () => {
    const data = Buffer.from('0102030405', 'hex');
    const record = pcapRecord(data, 1_700_000_000_123.456);
    assert.equal(
      record.toString('hex'),
      [
        '00f15365', // ts_sec 1700000000 = 0x6553f100
        '40e20100', // ts_usec 123456 = 0x0001e240
        '05000000', // incl_len
        '05000000', // orig_len
        '0102030405',
      ].join(''),
    );
  });

  test('a file the writer makes starts with the global header', async () => {
    const path = join(dir, 'empty.pcap');
    const writer = await PcapWriter.open(path);
    assert.equal(writer.path, path);
    await writer.close();
    assert.deepEqual(await readFile(path), pcapGlobalHeader());
    assert.deepEqual(readPcap(await readFile(path)), { linkType: 1, records: [] });
  });

  test('round trip: frames, times to the microsecond, a frame longer than snaplen cut', async () => {
    const path = join(dir, 'round-trip.pcap');
    const big = Buffer.alloc(PCAP_SNAPLEN + 1000);
    for (let i = 0; i < big.length; i++) big[i] = i & 0xff;
    const input = [
      { frame: frame('hello'), timeMs: 1_700_000_000_000 },
      { frame: frame('fraction', 0x0b), timeMs: 1_700_000_000_123.456 },
      { frame: frame('rounds up', 0x0c), timeMs: 1_700_000_001_999.9995 }, // the double is …999.99951171875: rounds up to 1700000002.000000
      { frame: big, timeMs: 1_700_000_002_500.25 }, // 0.25 µs rounds down → .500250
      { frame: frame(''), timeMs: 1_700_000_003_000.0002 }, // the double is …000.000244140625: rounds down
    ];
    const writer = await PcapWriter.open(path);
    for (const { frame, timeMs } of input) writer.write(frame, timeMs);
    assert.equal(writer.frames, input.length);
    assert.equal(writer.dropped, 0);
    await writer.close();

    const data = await readFile(path);
    const { linkType, records } = readPcap(data);
    assert.equal(linkType, 1);
    assert.equal(records.length, input.length);

    const micros = records.map((record) => Math.round(record.timeMs * 1000));
    assert.deepEqual(
      micros,
      [
        1_700_000_000_000_000, 1_700_000_000_123_456, 1_700_000_002_000_000, 1_700_000_002_500_250,
        1_700_000_003_000_000,
      ],
    );
    // The raw fields too: ts_usec stays below a million when the time rounds up to the next second.
    const third = 24 + (16 + 14 + 5) + (16 + 14 + 8) + (16 + 14 + 9);
    assert.equal(data.readUInt32LE(third - (16 + 14 + 9)), 1_700_000_002);
    assert.equal(data.readUInt32LE(third - (16 + 14 + 9) + 4), 0);

    for (const [i, record] of records.entries()) {
      const sent = input[i]?.frame;
      assert.ok(sent);
      assert.equal(record.originalLength, sent.length);
      assert.deepEqual(record.frame, sent.subarray(0, PCAP_SNAPLEN));
    }
    assert.equal(records[3]?.frame.length, PCAP_SNAPLEN);
    assert.equal(records[3]?.originalLength, PCAP_SNAPLEN + 1000);
  });

  test('the writer copies the frame: changing the buffer after write does not change the file', async () => {
    const path = join(dir, 'copy.pcap');
    const writer = await PcapWriter.open(path);
    const data = frame('original');
    writer.write(data, 1_000);
    data.fill(0);
    await writer.close();
    assert.deepEqual(readPcap(await readFile(path)).records[0]?.frame, frame('original'));
  });

  test('reads a big-endian file written by hand', () => {
    const first = frame('big-endian');
    const second = frame('second', 0x0b);
    const { linkType, records } = readPcap(
      bigEndianFile([
        { sec: 1_700_000_000, frac: 123_456, data: first },
        { sec: 1_700_000_001, frac: 1, data: second.subarray(0, 16), orig: second.length },
      ]),
    );
    assert.equal(linkType, 1);
    assert.equal(records.length, 2);
    assert.equal(Math.round((records[0]?.timeMs ?? 0) * 1000), 1_700_000_000_123_456);
    assert.deepEqual(records[0]?.frame, first);
    assert.equal(records[0]?.originalLength, first.length);
    assert.equal(Math.round((records[1]?.timeMs ?? 0) * 1000), 1_700_000_001_000_001);
    assert.deepEqual(records[1]?.frame, second.subarray(0, 16));
    assert.equal(records[1]?.originalLength, second.length);
  });

  test('reads nanosecond files in both byte orders', () => {
    const data = frame('nano');
    const bigEndian = bigEndianFile([{ sec: 10, frac: 123_456_789, data }], 0xa1b23c4d);
    const { records } = readPcap(bigEndian);
    assert.equal(Math.round((records[0]?.timeMs ?? 0) * 1e6), 10_123_456_789);
    assert.deepEqual(records[0]?.frame, data);

    // The same file in little-endian order: swap every 32-bit header field.
    const littleEndian = Buffer.from(bigEndian);
    littleEndian.writeUInt32LE(0xa1b23c4d, 0);
    littleEndian.writeUInt16LE(2, 4);
    littleEndian.writeUInt16LE(4, 6);
    for (const offset of [8, 12, 16, 20, 24, 28, 32, 36]) {
      littleEndian.writeUInt32LE(bigEndian.readUInt32BE(offset), offset);
    }
    const fromLittle = readPcap(littleEndian);
    assert.equal(fromLittle.linkType, 1);
    assert.deepEqual(fromLittle.records, records);
  });

  test('a bad magic number is an error naming it', () => {
    const data = Buffer.concat([Buffer.from('0a0d0d0a', 'hex'), Buffer.alloc(20)]); // pcapng
    assert.throws(() => readPcap(data), /bad magic number 0x0a0d0d0a/);
    assert.throws(() => readPcap(Buffer.alloc(24)), /bad magic number 0x00000000/);
  });

  test('truncated files are errors naming the problem', async () => {
    const path = join(dir, 'truncate.pcap');
    const writer = await PcapWriter.open(path);
    writer.write(frame('one'), 1_000);
    writer.write(frame('two'), 2_000);
    await writer.close();
    const data = await readFile(path);
    const secondRecord = 24 + 16 + 14 + 3;
    assert.equal(readPcap(data).records.length, 2);

    assert.throws(() => readPcap(data.subarray(0, 10)), /truncated global header: 10 bytes/);
    assert.throws(() => readPcap(data.subarray(0, secondRecord + 7)), /truncated record header: record 1/);
    assert.throws(
      () => readPcap(data.subarray(0, data.length - 1)),
      /truncated record: record 1 .* 17 bytes/,
    );
    // Cut right at a record boundary: a complete, shorter file.
    assert.equal(readPcap(data.subarray(0, secondRecord)).records.length, 1);
  });

  test('close is idempotent and writes after close are ignored', async () => {
    const path = join(dir, 'closed.pcap');
    const writer = await PcapWriter.open(path);
    writer.write(frame('kept'), 1_000);
    const first = writer.close();
    writer.write(frame('while closing'), 2_000);
    const second = writer.close();
    assert.equal(first, second);
    await first;
    await writer.close();
    writer.write(frame('after close'), 3_000);
    assert.equal(writer.frames, 1);
    assert.equal(writer.dropped, 0);
    const { records } = readPcap(await readFile(path));
    assert.equal(records.length, 1);
    assert.deepEqual(records[0]?.frame, frame('kept'));
  });

  test('open truncates an existing file', async () => {
    const path = join(dir, 'truncated-on-open.pcap');
    const first = await PcapWriter.open(path);
    first.write(frame('old'), 1_000);
    first.write(frame('old'), 2_000);
    await first.close();
    const second = await PcapWriter.open(path);
    second.write(frame('new'), 3_000);
    await second.close();
    const { records } = readPcap(await readFile(path));
    assert.deepEqual(
      records.map((record) => record.frame),
      [frame('new')],
    );
  });

  test('open rejects with an error naming the path when the file cannot be created', async () => {
    const path = join(dir, 'no-such-dir', 'x.pcap');
    await assert.rejects(PcapWriter.open(path), (error: Error) => {
      assert.match(error.message, /cannot open/);
      assert.ok(error.message.includes(path), error.message);
      assert.match(error.message, /ENOENT/);
      return true;
    });
  });

  test('frames beyond the buffer limit are dropped and counted, and writing resumes once it drains', async () => {
    const path = join(dir, 'limit.pcap');
    const writer = await PcapWriter.open(path, { bufferLimit: 1000 });
    const payload = Buffer.alloc(200 - 14, 0x61);
    // Each record is 16 + 200 bytes; nothing reaches the disk within one tick, so 4 fit and 6 are dropped.
    for (let i = 0; i < 10; i++) writer.write(frame(payload), 1_000 + i);
    assert.equal(writer.frames, 4);
    assert.equal(writer.dropped, 6);
    // Once the stream has drained, frames are accepted again.
    await new Promise((resolve) => setTimeout(resolve, 50));
    writer.write(frame('later'), 5_000);
    assert.equal(writer.frames, 5);
    await writer.close();
    const { records } = readPcap(await readFile(path));
    assert.deepEqual(
      records.map((record) => record.timeMs),
      [1_000, 1_001, 1_002, 1_003, 5_000],
    );
  });

  test('a failing stream (disk full) does not crash: writes stop and close rejects naming the path', {
    skip: existsSync('/dev/full') ? false : 'needs /dev/full (Linux) to simulate a full disk',
  }, async () => {
    const writer = await PcapWriter.open('/dev/full');
    writer.write(frame('lost'), 1_000);
    // Let the failed write come back; the error must not be thrown or reach 'uncaughtException'.
    await new Promise((resolve) => setTimeout(resolve, 50));
    writer.write(frame('after the error'), 2_000);
    assert.equal(writer.dropped, 1);
    const closed = writer.close();
    await assert.rejects(closed, (error: Error) => {
      assert.ok(error.message.includes('/dev/full'), error.message);
      assert.match(error.message, /ENOSPC/);
      return true;
    });
    assert.equal(writer.close(), closed);
    await assert.rejects(writer.close(), /ENOSPC/);
  });

  test('a stream failing while closing still rejects close', {
    skip: existsSync('/dev/full') ? false : 'needs /dev/full (Linux) to simulate a full disk',
  }, async () => {
    const writer = await PcapWriter.open('/dev/full');
    writer.write(frame('lost'), 1_000);
    await assert.rejects(writer.close(), /pcap \/dev\/full: .*ENOSPC/);
  });

  test('tcpdump reads the file', async (t) => {
    const tcpdump = await findTcpdump();
    if (!tcpdump) {
      t.skip('tcpdump is not installed');
      return;
    }
    const path = join(dir, 'tcpdump.pcap');
    const writer = await PcapWriter.open(path);
    // An ARP request: who has 10.0.0.2, tell 10.0.0.1.
    const arp = Buffer.from(
      'ffffffffffff' +
        '52540000000a' +
        '0806' +
        '0001080006040001' +
        '52540000000a' +
        '0a000001' +
        '000000000000' +
        '0a000002',
      'hex',
    );
    writer.write(arp, 1_700_000_000_123.456);
    writer.write(frame('experimental'), 1_700_000_001_000.001);
    // Larger than the old default snaplen of 65535. (tcpdump 4.99 reads a record of a frame longer than 262144
    // bytes but its printer flags it: "[Invalid header: len(262154) > 262144]"; the switch never sees one.)
    writer.write(frame(Buffer.alloc(70_000)), 1_700_000_002_000);
    await writer.close();

    const { stdout, stderr } = await run(tcpdump, ['-r', path, '-n', '-tt']);
    assert.match(stderr, /link-type EN10MB \(Ethernet\)/);
    assert.match(stderr, /snapshot length 262144/);
    // One summary line per packet; tcpdump hex-dumps unknown EtherTypes on indented lines below it.
    const lines = stdout.split('\n').filter((line) => /^\d/.test(line));
    assert.equal(lines.length, 3, stdout);
    assert.match(lines[0] ?? '', /^1700000000\.123456 ARP, Request who-has 10\.0\.0\.2 tell 10\.0\.0\.1/);
    assert.match(lines[1] ?? '', /^1700000001\.000001 /);
    assert.match(lines[2] ?? '', /^1700000002\.000000 .*length 70014/);
  });
});

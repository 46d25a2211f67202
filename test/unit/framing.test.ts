import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { guestSeconds } from '../../src/agent/backdoor.js';
import { BANNER, type BackdoorEvent, BackdoorParser, encodeRequest } from '../../src/agent/framing.js';
import { LineSplitter } from '../../src/util/lines.js';

/** Feeds `chunks` to a fresh parser and returns every event it emitted. */
function parse(...chunks: Array<Buffer | string>): BackdoorEvent[] {
  const events: BackdoorEvent[] = [];
  const parser = new BackdoorParser((event) => events.push(event));
  for (const chunk of chunks) parser.push(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk);
  return events;
}

/** A reply exactly as guest/agent/main.c frames it. */
function frameReply(
  id: number,
  status: number,
  stdout: Buffer,
  stderr: Buffer,
  eol = '\n',
  timedOut = false,
) {
  return Buffer.from(
    `<<<VMKIT:R ${id} ${status} ${timedOut ? 1 : 0}>>>${eol}` +
      `${stdout.toString('base64')}${eol}` +
      `${stderr.toString('base64')}${eol}` +
      `<<<VMKIT:E ${id}>>>${eol}`,
    'latin1',
  );
}

/** Splits `data` at the given offsets (sorted, distinct, inside the buffer). */
function splitAt(data: Buffer, offsets: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let start = 0;
  for (const offset of offsets) {
    chunks.push(data.subarray(start, offset));
    start = offset;
  }
  chunks.push(data.subarray(start));
  return chunks;
}

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

function onlyReply(events: BackdoorEvent[]) {
  assert.equal(events.length, 1, `expected exactly one event, got ${JSON.stringify(events)}`);
  const [event] = events;
  assert.ok(event, 'no event');
  assert.equal(event.type, 'reply', `expected a reply, got ${JSON.stringify(event)}`);
  if (event.type !== 'reply') throw new Error('unreachable');
  return event;
}

describe('LineSplitter', () => {
  test('splits on newlines, joins pieces across chunks, and keeps the partial tail', () => {
    const splitter = new LineSplitter();
    const lines: string[] = [];
    const onLine = (line: Buffer) => lines.push(line.toString('latin1'));
    splitter.push(Buffer.from('ab'), onLine);
    assert.deepEqual(lines, []);
    assert.equal(splitter.partial.toString(), 'ab');
    splitter.push(Buffer.from('c\n\nde'), onLine);
    assert.deepEqual(lines, ['abc', '']);
    assert.equal(splitter.partial.toString(), 'de');
    splitter.push(Buffer.from('f'), onLine);
    splitter.push(Buffer.from('g\nh\n'), onLine);
    assert.deepEqual(lines, ['abc', '', 'defg', 'h']);
    assert.equal(splitter.partial.length, 0);
  });

  test('one byte at a time gives the same lines as one chunk', () => {
    const text = Buffer.from('first line\r\nsecond\n\nthird\nunterminated');
    const whole: string[] = [];
    new LineSplitter().push(text, (line) => whole.push(line.toString('latin1')));
    const splitter = new LineSplitter();
    const bytewise: string[] = [];
    for (let i = 0; i < text.length; i++) {
      splitter.push(text.subarray(i, i + 1), (line) => bytewise.push(line.toString('latin1')));
    }
    assert.deepEqual(whole, ['first line\r', 'second', '', 'third']);
    assert.deepEqual(bytewise, whole);
    assert.equal(splitter.partial.toString(), 'unterminated');
  });
});

describe('BackdoorParser', () => {
  test('the banner line becomes a banner event', () => {
    assert.deepEqual(parse(`\n${BANNER}\n`), [{ type: 'banner' }]);
    assert.equal(BANNER, 'Spawning backdoor root shell...');
  });

  test('the banner is only recognised on a line of its own', () => {
    const events = parse(`login: ${BANNER}\n`);
    assert.deepEqual(events, [{ type: 'noise', line: `login: ${BANNER}` }]);
  });

  test('a banner in the middle of a reply (the guest rebooted while replying) ends it and counts', () => {
    for (const cut of ['<<<VMKIT:R 4 0 0>>>\n', '<<<VMKIT:R 4 0 0>>>\naGk=\n', '<<<VMKIT:R 4 0 0>>>\n\n\n']) {
      const events = parse(cut, `\n${BANNER}\n`, frameReply(5, 0, Buffer.from('after\n'), Buffer.alloc(0)));
      // The cut reply is reported as noise (cut short, or malformed when the banner's blank line
      // closed it), never as a reply; the banner counts, and the next reply parses.
      assert.equal(events.length, 3, JSON.stringify(events));
      assert.equal(events[0]?.type, 'noise');
      assert.deepEqual(events[1], { type: 'banner' });
      const next = events[2];
      assert.ok(
        next?.type === 'reply' && next.id === 5 && next.stdout.toString() === 'after\n',
        JSON.stringify(events),
      );
    }
  });

  test('a complete reply in one chunk', () => {
    const reply = onlyReply(parse(frameReply(7, 3, Buffer.from('hello\n'), Buffer.from('oops\n'))));
    assert.equal(reply.id, 7);
    assert.equal(reply.status, 3);
    assert.equal(reply.stdout.toString(), 'hello\n');
    assert.equal(reply.stderr.toString(), 'oops\n');
  });

  test('the status of a killed command (137) and its partial output are carried', () => {
    const reply = onlyReply(parse(frameReply(12, 137, Buffer.from('partial'), Buffer.alloc(0))));
    assert.equal(reply.id, 12);
    assert.equal(reply.status, 137);
    assert.equal(reply.timedOut, false);
    assert.equal(reply.stdout.toString(), 'partial');
  });

  test('the timed-out flag is carried', () => {
    const reply = onlyReply(parse(frameReply(13, 137, Buffer.from('p'), Buffer.alloc(0), '\n', true)));
    assert.equal(reply.timedOut, true);
    assert.equal(reply.status, 137);
  });

  test('binary stdout with all 256 byte values round-trips through base64', () => {
    const stderr = Buffer.from(ALL_BYTES).reverse();
    const reply = onlyReply(parse(frameReply(1, 0, ALL_BYTES, stderr)));
    assert.ok(reply.stdout.equals(ALL_BYTES), 'stdout bytes differ');
    assert.ok(reply.stderr.equals(stderr), 'stderr bytes differ');
  });

  test('empty stdout and stderr give empty buffers', () => {
    const wire = frameReply(4, 0, Buffer.alloc(0), Buffer.alloc(0));
    assert.equal(wire.toString(), '<<<VMKIT:R 4 0 0>>>\n\n\n<<<VMKIT:E 4>>>\n');
    const reply = onlyReply(parse(wire));
    assert.ok(
      Buffer.isBuffer(reply.stdout) && Buffer.isBuffer(reply.stderr),
      'stdout and stderr must be buffers',
    );
    assert.equal(reply.stdout.length, 0);
    assert.equal(reply.stderr.length, 0);
  });

  test('a reply split at every possible single boundary gives the same reply', () => {
    const stdout = Buffer.concat([ALL_BYTES, Buffer.from('tail')]);
    const wire = frameReply(42, 1, stdout, Buffer.from('err'));
    for (let cut = 1; cut < wire.length; cut++) {
      const reply = onlyReply(parse(...splitAt(wire, [cut])));
      assert.equal(reply.id, 42, `cut at ${cut}`);
      assert.equal(reply.status, 1, `cut at ${cut}`);
      assert.ok(reply.stdout.equals(stdout), `stdout differs when cut at ${cut}`);
      assert.equal(reply.stderr.toString(), 'err', `cut at ${cut}`);
    }
  });

  test('a reply in many chunks at awkward places: inside markers, inside base64 quads, at the newlines', () => {
    const stdout = Buffer.from(ALL_BYTES.subarray(0, 100));
    const wire = frameReply(31337, 255, stdout, Buffer.from('e'), '\r\n');
    const text = wire.toString('latin1');
    const base64Start = text.indexOf('\n') + 1;
    const endMarker = text.indexOf('<<<VMKIT:E');
    const offsets = [
      1, // inside "<<<"
      5, // inside "VMKIT"
      text.indexOf(' 255') + 2, // inside the status
      text.indexOf('>>>'), // just before the closing marker
      text.indexOf('\r'), // between the marker and its CR
      text.indexOf('\n'), // between CR and LF
      base64Start + 1, // inside the first base64 quad
      base64Start + 6, // inside the second quad
      base64Start + 63,
      endMarker - 1, // between the stderr line's CR and LF
      endMarker + 3, // right after "<<<"
      endMarker + 12, // inside the id of the end marker
      wire.length - 1, // the final LF alone
    ].sort((a, b) => a - b);
    assert.equal(new Set(offsets).size, offsets.length, 'offsets must be distinct');
    const chunks = splitAt(wire, offsets);
    assert.ok(
      chunks.every((chunk) => chunk.length > 0),
      'an empty chunk',
    );
    const reply = onlyReply(parse(...chunks));
    assert.deepEqual({ id: reply.id, status: reply.status }, { id: 31337, status: 255 });
    assert.ok(reply.stdout.equals(stdout), 'stdout bytes differ');
    assert.equal(reply.stderr.toString(), 'e');
  });

  test('a reply fed one byte at a time', () => {
    const wire = frameReply(9, 0, ALL_BYTES, Buffer.from('x'));
    const events: BackdoorEvent[] = [];
    const parser = new BackdoorParser((event) => events.push(event));
    for (let i = 0; i < wire.length; i++) {
      parser.push(wire.subarray(i, i + 1));
      if (i < wire.length - 1) assert.equal(events.length, 0, `event emitted early, after byte ${i}`);
    }
    assert.ok(onlyReply(events).stdout.equals(ALL_BYTES), 'stdout bytes differ');
  });

  test('CRLF line endings are tolerated on every line', () => {
    const events = parse(
      `${BANNER}\r\n`,
      '<<<VMKIT:GO 3>>>\r\n',
      frameReply(3, 0, Buffer.from('ok'), Buffer.from('warn'), '\r\n'),
    );
    assert.equal(events.length, 3, JSON.stringify(events));
    assert.deepEqual(events[0], { type: 'banner' });
    assert.deepEqual(events[1], { type: 'go', id: 3 });
    const reply = events[2];
    assert.ok(reply?.type === 'reply', `expected a reply, got ${JSON.stringify(reply)}`);
    assert.equal(reply.stdout.toString(), 'ok');
    assert.equal(reply.stderr.toString(), 'warn');
  });

  test('GO and SEND events', () => {
    assert.deepEqual(parse('<<<VMKIT:GO 5>>>\n<<<VMKIT:SEND 6 1048576>>>\n<<<VMKIT:SEND 7 0>>>\n'), [
      { type: 'go', id: 5 },
      { type: 'send', id: 6, size: 1048576 },
      { type: 'send', id: 7, size: 0 },
    ]);
  });

  test('noise lines are reported; empty lines are not', () => {
    const events = parse(
      '[    1.234] virtio_console: loaded\n\n\r\n#\n',
      '<<<VMKIT:GO x>>>\n',
      '<<<VMKIT:R 1>>>\n',
      '<<<VMKIT:R 1 0 2>>>\n', // the timed-out flag is 0 or 1
    );
    assert.deepEqual(events, [
      { type: 'noise', line: '[    1.234] virtio_console: loaded' },
      { type: 'noise', line: '#' },
      { type: 'noise', line: '<<<VMKIT:GO x>>>' },
      { type: 'noise', line: '<<<VMKIT:R 1>>>' },
      { type: 'noise', line: '<<<VMKIT:R 1 0 2>>>' },
    ]);
  });

  test('noise between replies does not disturb the next reply', () => {
    const events = parse(
      'random kernel message\n',
      frameReply(1, 0, Buffer.from('a'), Buffer.alloc(0)),
      'more noise\n',
      frameReply(2, 0, Buffer.from('b'), Buffer.alloc(0)),
    );
    assert.deepEqual(
      events.map((event) => (event.type === 'reply' ? `reply ${event.id} ${event.stdout}` : event.type)),
      ['noise', 'reply 1 a', 'noise', 'reply 2 b'],
    );
  });

  test('an END marker with the wrong id is reported as noise, not as a reply', () => {
    const wire = frameReply(8, 0, Buffer.from('out'), Buffer.from('err')).toString('latin1');
    const events = parse(wire.replace('<<<VMKIT:E 8>>>', '<<<VMKIT:E 9>>>'));
    assert.equal(events.length, 1, JSON.stringify(events));
    const [event] = events;
    assert.equal(event?.type, 'noise');
    assert.ok(event?.type === 'noise' && event.line.includes('malformed reply 8'), JSON.stringify(event));
    assert.ok(!events.some((e) => e.type === 'reply'), 'a malformed reply was delivered');
  });

  test('a payload line that is not valid base64 (bytes lost or damaged) makes the reply malformed', () => {
    const good = frameReply(5, 0, Buffer.from('hello world!'), Buffer.from('e')).toString('latin1');
    const stdoutLine = Buffer.from('hello world!').toString('base64');
    assert.equal(stdoutLine, 'aGVsbG8gd29ybGQh');
    for (const damaged of [
      stdoutLine.slice(0, 7) + stdoutLine.slice(8), // one byte lost: length not a multiple of 4
      `${stdoutLine.slice(0, 7)}!${stdoutLine.slice(8)}`, // a byte damaged into a non-base64 character
      `${stdoutLine.slice(0, 7)} ${stdoutLine.slice(8)}`,
      `${stdoutLine}=`, // one byte too many
    ]) {
      const events = parse(good.replace(stdoutLine, damaged));
      assert.equal(events.length, 1, JSON.stringify(events));
      const [event] = events;
      assert.ok(
        event?.type === 'noise' && event.line.includes('malformed reply 5'),
        `damaged stdout ${JSON.stringify(damaged)} gave ${JSON.stringify(event)}`,
      );
    }
    // The same reply undamaged is accepted, so the damage is what was rejected.
    assert.equal(onlyReply(parse(good)).stdout.toString(), 'hello world!');
    const damagedStderr = parse(good.replace('\nZQ==\n', '\nZQ=\n'));
    assert.equal(damagedStderr[0]?.type, 'noise', JSON.stringify(damagedStderr));
    assert.equal(damagedStderr.length, 1, JSON.stringify(damagedStderr));
  });

  test('a payload that decodes to the word "corrupt" is still a good reply', () => {
    const reply = onlyReply(parse(frameReply(6, 0, Buffer.from('corrupt'), Buffer.from('corrupt'))));
    assert.equal(reply.stdout.toString(), 'corrupt');
    assert.equal(reply.stderr.toString(), 'corrupt');
  });

  test('a garbage line where the END marker belongs is noise, and the parser recovers', () => {
    const bad = '<<<VMKIT:R 8 0 0>>>\nb3V0\nZXJy\nnot an end marker\n';
    const events = parse(bad, frameReply(10, 2, Buffer.from('next'), Buffer.alloc(0)));
    assert.equal(events.length, 2, JSON.stringify(events));
    assert.equal(events[0]?.type, 'noise');
    const reply = events[1];
    assert.ok(reply?.type === 'reply', `expected a reply, got ${JSON.stringify(reply)}`);
    assert.equal(reply.id, 10);
    assert.equal(reply.status, 2);
    assert.equal(reply.stdout.toString(), 'next');
  });
});

describe('encodeRequest', () => {
  /** Splits a request line the way the guest's `read -r kind id arg1 arg2` does. */
  function fields(line: string): string[] {
    assert.ok(line.endsWith('\n'), 'a request is one newline-terminated line');
    const body = line.slice(0, -1);
    assert.ok(!body.includes('\n') && !body.includes('\r'), 'a request must not contain line breaks');
    return body.split(' ');
  }
  const decode = (b64: string | undefined) => {
    assert.ok(b64 !== undefined && /^[A-Za-z0-9+/]*={0,2}$/.test(b64), `not base64: ${b64}`);
    return Buffer.from(b64, 'base64').toString('utf8');
  };

  /** Splits a run request into its header fields and the script bytes that follow it. */
  function runRequest(request: Buffer): { header: string[]; body: Buffer } {
    assert.ok(Buffer.isBuffer(request), 'a run request is bytes');
    const newline = request.indexOf(10);
    assert.ok(newline > 0, 'no header line');
    const header = request.subarray(0, newline).toString('latin1');
    assert.ok(!header.includes('\r'), 'a carriage return in the header');
    return { header: header.split(' '), body: request.subarray(newline + 1) };
  }

  test('run: a header line with id, timeout and byte length, then the script bytes verbatim', () => {
    const script =
      "set -e\necho 'it''s' \"$HOME\" | tr a-z A-Z\nprintf 'caf\u00e9 ✓\\n'\n\tcat <<EOF\nx y  z\nEOF\n";
    const { header, body } = runRequest(encodeRequest.run(17, script, 3));
    const [kind, id, timeout, length, ...rest] = header;
    assert.deepEqual(rest, []);
    assert.equal(kind, 'X');
    assert.equal(id, '17');
    assert.equal(timeout, '3');
    // The length counts UTF-8 bytes, not characters: é and ✓ take 2 and 3 bytes.
    assert.equal(Number(length), Buffer.byteLength(script));
    assert.notEqual(Number(length), script.length);
    assert.equal(body.length, Number(length), 'nothing may follow the script');
    assert.equal(body.toString('utf8'), script);
  });

  test('run: the timeout travels in whole seconds, as the guest watchdog counts them', () => {
    assert.equal(runRequest(encodeRequest.run(1, 'true', 600)).header[2], '600');
    for (const [ms, seconds] of [
      [1, 1],
      [999, 1],
      [1000, 1],
      [1001, 2],
      [120_000, 120],
    ] as const) {
      assert.equal(guestSeconds(ms), seconds, `${ms} ms`);
    }
  });

  test('run: an empty script is a header with length 0 and nothing after it', () => {
    const { header, body } = runRequest(encodeRequest.run(2, '', 1));
    assert.deepEqual(header, ['X', '2', '1', '0']);
    assert.equal(body.length, 0);
  });

  test('run: a long script travels whole, its length in the header', () => {
    const script = 'echo x\n'.repeat(5000);
    const { header, body } = runRequest(encodeRequest.run(4, script, 10));
    assert.equal(header[3], String(script.length));
    assert.equal(body.toString(), script);
  });

  test('upload: size and path with spaces decode back', () => {
    const path = '/tmp/dir with spaces/ünïcode file.bin';
    const [kind, id, size, payload, ...rest] = fields(encodeRequest.upload(3, 123456, path));
    assert.deepEqual(rest, []);
    assert.deepEqual([kind, id, size], ['U', '3', '123456']);
    assert.equal(decode(payload), path);
  });

  test('download: the path decodes back', () => {
    const path = '/var/log/a b\tc.log';
    const [kind, id, payload, ...rest] = fields(encodeRequest.download(99, path));
    assert.deepEqual(rest, []);
    assert.deepEqual([kind, id], ['D', '99']);
    assert.equal(decode(payload), path);
  });
});

describe('LineSplitter with a length limit', () => {
  test('a peer that never sends a newline gets its bytes handed out in pieces, not buffered', () => {
    const splitter = new LineSplitter(4);
    const lines: string[] = [];
    splitter.push(Buffer.from('abcdefghij'), (line) => lines.push(line.toString()));
    assert.deepEqual(lines, ['abcd', 'efgh']);
    assert.equal(splitter.partial.toString(), 'ij');
    splitter.push(Buffer.from('k\nxy'), (line) => lines.push(line.toString()));
    assert.deepEqual(lines, ['abcd', 'efgh', 'ijk']);
    assert.equal(splitter.partial.toString(), 'xy');
  });
});

describe('started processes on the wire', () => {
  test('output lines decode to bytes per stream, exit lines to status and timeout', () => {
    const bytes = Buffer.from([0, 1, 2, 255, 10, 13]);
    const events = parse(
      `<<<VMKIT:O 7 1 ${bytes.toString('base64')}>>>\n`,
      `<<<VMKIT:O 7 2 ${Buffer.from('warn').toString('base64')}>>>\r\n`,
      '<<<VMKIT:Z 7 143 0>>>\n<<<VMKIT:Z 8 137 1>>>\n',
    );
    assert.deepEqual(events, [
      { type: 'output', id: 7, stream: 'stdout', data: bytes },
      { type: 'output', id: 7, stream: 'stderr', data: Buffer.from('warn') },
      { type: 'exit', id: 7, status: 143, timedOut: false },
      { type: 'exit', id: 8, status: 137, timedOut: true },
    ]);
  });

  test('a damaged output line is reported as noise, never as bytes', () => {
    const events = parse('<<<VMKIT:O 7 1 abc>>>\n', '<<<VMKIT:O 7 3 YWJj>>>\n');
    assert.equal(events.length, 2);
    for (const event of events) assert.equal(event.type, 'noise');
  });

  test('output lines may come between replies but never inside one', () => {
    const events = parse(
      '<<<VMKIT:O 3 1 aGk=>>>\n',
      frameReply(4, 0, Buffer.from('x'), Buffer.alloc(0)),
      '<<<VMKIT:O 3 1 aGk=>>>\n',
    );
    assert.deepEqual(
      events.map((event) => event.type),
      ['output', 'reply', 'output'],
    );
  });

  test('start, stdin, end of stdin and signal requests', () => {
    const start = encodeRequest.start(5, 'echo hi\n', 0);
    assert.equal(start.toString(), 'P 5 0 8\necho hi\n');
    const stdin = encodeRequest.stdin(6, 5, Buffer.from([0, 10, 255]));
    assert.deepEqual(stdin, Buffer.concat([Buffer.from('I 6 5 3\n'), Buffer.from([0, 10, 255])]));
    assert.equal(encodeRequest.closeStdin(7, 5), 'C 7 5\n');
    assert.equal(encodeRequest.signal(8, 5, 'TERM'), 'K 8 5 TERM\n');
  });
});

describe('the identity request', () => {
  const fields = (line: string) => {
    assert.ok(line.endsWith('\n') && !line.slice(0, -1).includes('\n'), 'one newline-terminated line');
    return line.slice(0, -1).split(' ');
  };
  test('clock in seconds and nanoseconds, flags, base64 hostname and entropy on one line', () => {
    const entropy = Buffer.from(ALL_BYTES.subarray(0, 64));
    const line = encodeRequest.identity(
      9,
      { hostname: 'clone-1', hostnameFiles: true, entropy },
      1_712_345_678_901,
    );
    const [kind, id, seconds, nanoseconds, flags, hostname, random, ...rest] = fields(line);
    assert.deepEqual([kind, id, seconds, nanoseconds, flags], ['T', '9', '1712345678', '901000000', '1']);
    assert.equal(Buffer.from(hostname ?? '', 'base64').toString(), 'clone-1');
    assert.deepEqual(Buffer.from(random ?? '', 'base64'), entropy);
    assert.deepEqual(rest, []);
    // Within the agent's field sizes (hostname 255, entropy 2047 characters).
    assert.ok((hostname ?? '').length < 256 && (random ?? '').length < 2048);
  });

  test('"-" for no new hostname and no entropy, flag 0 when no hostname files', () => {
    const line = encodeRequest.identity(
      3,
      { hostnameFiles: false, entropy: Buffer.alloc(0) },
      1_000_000_000_000,
    );
    assert.equal(line, 'T 3 1000000000 0 0 - -\n');
    const odd = encodeRequest.identity(4, { hostnameFiles: false, entropy: Buffer.alloc(0) }, 1_500.9999999);
    assert.deepEqual(fields(odd).slice(2, 4), ['1', '500999999']);
  });

  test('a new machine ID is a fifth field, in hex as given; without one the line has four', () => {
    const machineId = '0123456789abcdef'.repeat(2);
    const line = encodeRequest.identity(
      5,
      { hostnameFiles: true, entropy: Buffer.alloc(0), machineId },
      1_000,
    );
    assert.equal(line, `T 5 1 0 1 - - ${machineId}\n`);
  });
});

describe('one-line scripts', () => {
  test('travel on the request line; anything else keeps the length-prefixed form', () => {
    assert.equal(
      encodeRequest.run(3, 'echo "a  b" | tr a-z A-Z', 5).toString(),
      'Y 3 5 echo "a  b" | tr a-z A-Z\n',
    );
    for (const script of ['echo a\necho b', ' leading', 'trailing ', 'cr\r', 'nul\0', '', 'x'.repeat(5000)]) {
      assert.match(
        encodeRequest.run(4, script, 5).toString('latin1'),
        /^X 4 5 \d+\n/,
        JSON.stringify(script),
      );
    }
  });
});

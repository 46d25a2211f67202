import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { readPcap } from '../../src/network/pcap.js';
import { PORT_QUEUE_LIMIT, REORDER_HOLD_MS, VirtualSwitch } from '../../src/network/switch.js';
import { BROADCAST, connectPorts, frame, MAC, Port, record, settle } from './switch-helpers.js';

const MACS = { ...MAC, d: '52:54:00:00:00:0d' };

interface Lan {
  sw: VirtualSwitch;
  a: Port;
  b: Port;
  c: Port;
  d: Port;
  socketPath: string;
}

/**
 * A switch with four ports whose MACs are claimed by machines a, b, c and d; each port has sent
 * one broadcast so the switch knows who is who (and where each MAC is), then forgotten what it got.
 */
async function withLan(body: (lan: Lan) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vmkit-faults-test-'));
  const socketPath = join(dir, 'switch.sock');
  const sw = await VirtualSwitch.create('lan', socketPath);
  const ports: Port[] = [];
  try {
    ports.push(...(await connectPorts(sw, socketPath, 4)));
    const [a, b, c, d] = ports as [Port, Port, Port, Port];
    const names = ['a', 'b', 'c', 'd'] as const;
    names.forEach((name, index) => {
      sw.claimMac(MACS[name], name);
      ports[index]?.send(frame(BROADCAST, MACS[name], `hello from ${name}`));
    });
    for (const port of ports) await port.received(3);
    for (const port of ports) port.clear();
    await body({ sw, a, b, c, d, socketPath });
  } finally {
    for (const port of ports) port.socket.destroy();
    await sw.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Waits until `condition` holds (or fails after `timeoutMs`). */
async function until(condition: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await settle(5);
  }
}

/** Sends a marker broadcast from `from` that the listed ports must get, then checks they got only that. */
async function gotOnlyMarker(from: Port, ports: Port[], marker = 'marker'): Promise<void> {
  from.send(frame(BROADCAST, MAC.unknown, marker));
  for (const port of ports) await port.received(1);
  await settle(30);
  for (const port of ports) assert.deepEqual(port.payloads(), [marker]);
}

const statsOf = (sw: VirtualSwitch, name: string) => {
  const found = sw.stats().ports.find((port) => port.port === name);
  assert.ok(found, `no stats for ${name}`);
  return found;
};

/** `count` numbered unicast frames from `src` to `dst` in one write. */
const numbered = (dst: string, src: string, count: number, size = 0) =>
  Buffer.concat(
    Array.from({ length: count }, (_, i) => record(frame(dst, src, `${i}`.padEnd(Math.max(size, 1), '.')))),
  );
const indices = (port: Port) => port.payloads().map((payload) => Number.parseInt(payload, 10));

describe('VirtualSwitch faults', { timeout: 10_000 }, () => {
  test('a partition blocks frames across groups, not within; the unnamed form a group; heal restores', async () => {
    await withLan(async ({ sw, a, b, c, d }) => {
      sw.partition([['a', { name: 'b' }], ['c']]);
      a.send(frame(BROADCAST, MACS.a, 'broadcast from a'));
      a.send(frame(MACS.c, MACS.a, 'unicast a to c'));
      c.send(frame(BROADCAST, MACS.c, 'broadcast from c'));
      c.send(frame(MACS.a, MACS.c, 'unicast c to a'));
      d.send(frame(BROADCAST, MACS.d, 'broadcast from d'));
      b.send(frame(MACS.a, MACS.b, 'unicast b to a'));
      await a.received(1);
      await b.received(1);
      await settle(50);
      assert.deepEqual(a.payloads(), ['unicast b to a']);
      assert.deepEqual(b.payloads(), ['broadcast from a']);
      assert.deepEqual(c.payloads(), []);
      assert.deepEqual(d.payloads(), []);
      // A frame from a MAC no machine claimed belongs to no machine: partitions let it through.
      for (const port of [a, b, d]) port.clear();
      await gotOnlyMarker(c, [a, b, d], 'from nobody');

      for (const port of [a, b, c, d]) port.clear();
      sw.heal();
      c.send(frame(BROADCAST, MACS.c, 'c again'));
      a.send(frame(MACS.c, MACS.a, 'a to c'));
      for (const port of [a, b, d])
        assert.deepEqual((await port.received(1)).at(-1)?.subarray(14).toString(), 'c again');
      assert.equal((await c.received(1))[0]?.subarray(14).toString(), 'a to c');
    });
  });

  test('isolate() cuts one machine off; remove() undoes that partition only', async () => {
    await withLan(async ({ sw, a, b, c, d }) => {
      const isolated = sw.isolate({ name: 'c' });
      const other = sw.partition([['d']]);
      a.send(frame(BROADCAST, MACS.a, 'from a'));
      assert.deepEqual(await b.received(1).then(() => b.payloads()), ['from a']);
      c.send(frame(BROADCAST, MACS.c, 'from c'));
      await settle(50);
      assert.deepEqual(c.payloads(), []);
      assert.deepEqual(a.payloads(), []);
      assert.deepEqual(d.payloads(), []);
      isolated.remove();
      isolated.remove(); // again: nothing
      c.send(frame(BROADCAST, MACS.c, 'c is back'));
      await a.received(1);
      await b.received(2);
      await settle(30);
      assert.deepEqual(d.payloads(), [], 'the other partition still holds d apart');
      other.remove();
      c.send(frame(BROADCAST, MACS.c, 'all'));
      assert.equal((await d.received(1))[0]?.subarray(14).toString(), 'all');
    });
  });

  test('30% loss with a seed lands near 30%, and the same seed drops the same frames', async () => {
    await withLan(async ({ sw, a, b }) => {
      const run = async (seed: number) => {
        const handle = sw.impair({ from: 'a', lossPercent: 30, seed });
        b.clear();
        const before = statsOf(sw, 'b');
        const received = sw.stats().total.framesReceived;
        a.socket.write(numbered(MACS.b, MACS.a, 2000));
        await until(
          () => sw.stats().total.framesReceived === received + 2000,
          'the switch to take 2000 frames',
        );
        const after = statsOf(sw, 'b');
        await b.received(after.framesForwarded - before.framesForwarded);
        assert.equal(after.droppedByFault - before.droppedByFault, 2000 - b.frames.length);
        handle.remove();
        return indices(b);
      };
      const first = await run(7);
      const lost = 2000 - first.length;
      // 600 expected; the binomial standard deviation is about 20.
      assert.ok(lost > 500 && lost < 700, `lost ${lost} of 2000`);
      assert.deepEqual(await run(7), first, 'the same seed dropped different frames');
      assert.notDeepEqual(await run(8), first, 'another seed dropped the same frames');
    });
  });

  test('a delay holds frames back at least that long, only for the machine named in `to`', async () => {
    await withLan(async ({ sw, a, b, c }) => {
      sw.impair({ to: ['b'], delayMs: 50 });
      const sent = performance.now();
      a.send(frame(BROADCAST, MACS.a, 'slow for b'));
      await c.received(1);
      await b.received(1);
      const atB = (b.times[0] ?? 0) - sent;
      const atC = (c.times[0] ?? 0) - sent;
      assert.ok(atB >= 45, `b got the frame after ${atB.toFixed(1)} ms`);
      assert.ok(
        atB - atC >= 40,
        `c got the frame ${(atB - atC).toFixed(1)} ms before b, not without the delay`,
      );
      assert.equal(statsOf(sw, 'b').delayed, 1);
    });
  });

  test('duplication delivers twice; reordering lets the next frame overtake', async () => {
    await withLan(async ({ sw, a, b, c }) => {
      sw.impair({ to: 'b', duplicatePercent: 100 });
      a.socket.write(numbered(MACS.b, MACS.a, 3));
      await b.received(6);
      assert.deepEqual(indices(b), [0, 0, 1, 1, 2, 2]);
      assert.equal(statsOf(sw, 'b').duplicated, 3);

      sw.heal();
      sw.impair({ from: 'a', to: 'c', reorderPercent: 100 });
      a.socket.write(numbered(MACS.c, MACS.a, 4));
      await c.received(4);
      assert.deepEqual(indices(c), [1, 0, 3, 2]);
      // A held frame with nothing behind it still goes, after REORDER_HOLD_MS.
      c.clear();
      const sent = performance.now();
      a.send(frame(MACS.c, MACS.a, 'alone'));
      await c.received(1);
      const waited = (c.times[0] ?? 0) - sent;
      assert.ok(
        waited >= REORDER_HOLD_MS - 5 && waited < REORDER_HOLD_MS + 150,
        `held ${waited.toFixed(1)} ms`,
      );
    });
  });

  test('a rate cap paces frames to about the rate', async () => {
    await withLan(async ({ sw, a, b }) => {
      sw.impair({ from: 'a', to: 'b', rateKbps: 800 }); // 100 bytes per ms
      const frames = 40;
      a.socket.write(numbered(MACS.b, MACS.a, frames, 1000));
      await b.received(frames);
      const spread = (b.times.at(-1) ?? 0) - (b.times[0] ?? 0);
      const expected = ((frames - 1) * 1014 * 8) / 800; // about 395 ms
      assert.ok(
        spread > expected * 0.8 && spread < expected * 1.6,
        `${frames} frames took ${spread.toFixed(0)} ms`,
      );
      assert.deepEqual(indices(b), [...Array(frames).keys()], 'pacing changed the order');
    });
  });

  test('`from` and `to` are direction-specific; remove() of one impairment leaves the others', async () => {
    await withLan(async ({ sw, a, b, c }) => {
      const fromA = sw.impair({ from: ['a'], lossPercent: 100 });
      sw.impair({ to: { name: 'c' }, lossPercent: 100 });
      a.send(frame(MACS.b, MACS.a, 'a to b'));
      b.send(frame(MACS.a, MACS.b, 'b to a'));
      b.send(frame(MACS.c, MACS.b, 'b to c'));
      assert.deepEqual(await a.received(1).then(() => a.payloads()), ['b to a']);
      await settle(50);
      assert.deepEqual(b.payloads(), []);
      assert.deepEqual(c.payloads(), []);
      fromA.remove();
      a.send(frame(MACS.b, MACS.a, 'a to b again'));
      a.send(frame(MACS.c, MACS.a, 'a to c'));
      assert.deepEqual(await b.received(1).then(() => b.payloads()), ['a to b again']);
      await settle(50);
      assert.deepEqual(c.payloads(), [], 'removing one impairment removed the other');
      // `machines` matches both directions.
      sw.heal();
      sw.impair({ machines: ['c'], lossPercent: 100 });
      for (const port of [a, b, c]) port.clear();
      c.send(frame(MACS.a, MACS.c, 'c to a'));
      a.send(frame(MACS.c, MACS.a, 'a to c'));
      await gotOnlyMarker(b, [a, c]);
    });
  });

  test('a port that never reads is bounded by its queue; the other ports get everything', async () => {
    await withLan(async ({ sw, a, b, c, d }) => {
      c.socket.pause();
      const before = statsOf(sw, 'c');
      const frames = 3000;
      a.socket.write(numbered(BROADCAST, MACS.a, frames, 1400)); // about 4.2 MB
      await b.received(frames, 5000);
      await d.received(frames, 5000);
      await until(() => sw.stats().total.framesReceived >= 4 + frames, 'the flood to pass');
      const atC = statsOf(sw, 'c');
      assert.ok(atC.queuedBytes <= PORT_QUEUE_LIMIT, `${atC.queuedBytes} bytes queued for c`);
      assert.ok(atC.droppedByQueue > 0, 'nothing was dropped for c');
      assert.equal(atC.framesForwarded - before.framesForwarded + atC.droppedByQueue, frames);
      assert.equal(statsOf(sw, 'b').droppedByQueue, 0);
      assert.equal(sw.stats().total.droppedByQueue, atC.droppedByQueue);
    });
  });

  test('stats count per port, by machine name or port label, and in total', async () => {
    await withLan(async ({ sw, a, socketPath }) => {
      // A fifth port that never sends: known by its label only.
      const stranger = new Port(connect(socketPath));
      after(() => stranger.socket.destroy());
      await until(() => sw.portCount === 5, 'a fifth port');
      const before = sw.stats().total;
      assert.equal(before.framesReceived, 4);
      assert.equal(sw.framesForwarded, 4);
      sw.isolate('c');
      sw.impair({ to: 'd', duplicatePercent: 100 });
      const hello = frame(BROADCAST, MACS.a, 'counted');
      a.send(hello);
      await until(() => statsOf(sw, 'd').framesForwarded === 3 + 2, 'two copies at d');
      const { total, ports } = sw.stats();
      assert.deepEqual(
        ports.map((port) => port.port),
        ['a', 'b', 'c', 'd', 'port 5'],
      );
      assert.equal(ports[4]?.machine, undefined);
      assert.equal(statsOf(sw, 'a').framesReceived, 2);
      assert.equal(statsOf(sw, 'a').bytesReceived, 14 + 'hello from a'.length + hello.length);
      assert.equal(statsOf(sw, 'b').framesForwarded, 4);
      assert.equal(statsOf(sw, 'c').droppedByFault, 1);
      assert.equal(statsOf(sw, 'd').duplicated, 1);
      assert.equal(statsOf(sw, 'port 5').framesForwarded, 1, 'the stranger gets the broadcast');
      assert.equal(total.framesReceived, 5);
      assert.equal(total.framesForwarded, 12 + 1 + 2 + 1);
      assert.equal(total.bytesForwarded - before.bytesForwarded, hello.length * 4);
      assert.equal(total.droppedByFault, 1);
      assert.equal(sw.framesForwarded, 5);
    });
  });

  test('bad fault input is a ConfigError naming the field and the value', async () => {
    await withLan(async ({ sw }) => {
      const cases: Array<[string, () => unknown, RegExp]> = [
        ['loss 101', () => sw.impair({ lossPercent: 101 }), /impair: lossPercent: .*0 to 100 \(got 101\)/],
        ['loss -1', () => sw.impair({ lossPercent: -1 }), /impair: lossPercent: .*\(got -1\)/],
        ['loss NaN', () => sw.impair({ lossPercent: Number.NaN }), /lossPercent: .*\(got NaN\)/],
        ['delay -5', () => sw.impair({ delayMs: -5 }), /impair: delayMs: .*0 to 60000 \(got -5\)/],
        ['jitter too long', () => sw.impair({ jitterMs: 60_001 }), /jitterMs: .*\(got 60001\)/],
        ['rate 0', () => sw.impair({ rateKbps: 0 }), /rateKbps: .*\(got 0\)/],
        ['fractional seed', () => sw.impair({ lossPercent: 1, seed: 1.5 }), /seed: .*\(got 1.5\)/],
        ['unknown option', () => sw.impair({ lossPercent: 1, loss: 5 } as never), /unknown option "loss"/],
        ['no effect', () => sw.impair({ machines: ['a'] }), /give at least one of lossPercent/],
        ['not an object', () => sw.impair('lossy' as never), /expected an options object \(got "lossy"\)/],
        [
          'from a number',
          () => sw.impair({ from: 5 as never, lossPercent: 1 }),
          /impair: from: must be a machine.*\(got 5\)/,
        ],
        ['empty list', () => sw.impair({ from: [], lossPercent: 1 }), /from: must name at least one machine/],
        [
          'unknown machine',
          () => sw.impair({ machines: ['a', 'zz'], lossPercent: 1 }),
          /impair: machines\[1\]: no machine "zz" on this switch \(machines on it: a, b, c, d\)/,
        ],
        ['unknown to', () => sw.impair({ to: { name: 'zz' }, delayMs: 1 }), /to\[0\]: no machine "zz"/],
        [
          'partition unknown',
          () => sw.partition([['a'], ['zz']]),
          /partition: groups\[1\]\[0\]: no machine "zz"/,
        ],
        [
          'partition twice',
          () => sw.partition([['a', 'b'], ['a']]),
          /groups\[1\]\[0\]: machine "a" is already in groups\[0\]/,
        ],
        ['partition empty', () => sw.partition([]), /partition: groups: must have at least one group/],
        ['partition empty group', () => sw.partition([['a'], []]), /groups\[1\]: must not be empty/],
        ['partition number', () => sw.partition([['a', 5 as never]]), /groups\[0\]\[1\]: .*\(got 5\)/],
        ['isolate unknown', () => sw.isolate('zz'), /isolate: machine: no machine "zz"/],
        [
          'isolate a number',
          () => sw.isolate(7 as never),
          /isolate: machine: must be a machine name .*\(got 7\)/,
        ],
        [
          'claim taken',
          () => sw.claimMac(MACS.a.toUpperCase(), 'e'),
          /MAC .* of machine e is already used by machine a/,
        ],
      ];
      for (const [name, call, message] of cases) {
        assert.throws(call, (error: unknown) => {
          assert.ok(error instanceof ConfigError, `${name}: not a ConfigError: ${String(error)}`);
          assert.match(error.message, message, name);
          return true;
        });
      }
      const { total } = sw.stats();
      assert.equal(total.droppedByFault, 0);
    });
  });

  test('taps see every frame received, before faults; removal stops them', async () => {
    await withLan(async ({ sw, a, b, c }) => {
      const seen: Array<{ payload: string; timeMs: number }> = [];
      const removeTap = sw.addTap((got, timeMs) =>
        seen.push({ payload: got.subarray(14).toString(), timeMs }),
      );
      sw.isolate('c');
      c.send(frame(BROADCAST, MACS.c, 'nobody gets this'));
      a.send(frame(BROADCAST, MACS.a, 'everyone but c'));
      await b.received(1);
      await until(() => seen.length === 2, 'two frames at the tap');
      assert.deepEqual(seen.map((s) => s.payload).sort(), ['everyone but c', 'nobody gets this']);
      for (const { timeMs } of seen) assert.ok(Math.abs(timeMs - Date.now()) < 1000, `tap time ${timeMs}`);
      removeTap();
      a.send(frame(BROADCAST, MACS.a, 'untapped'));
      await b.received(2);
      assert.equal(seen.length, 2);
      assert.deepEqual(c.payloads(), []);
      assert.throws(() => sw.addTap('no' as never), ConfigError);
    });
  });

  test('capture() writes what the switch receives to a pcap file; close() stops an open capture', async () => {
    await withLan(async ({ sw, a, b, socketPath }) => {
      const dir = join(socketPath, '..');
      const capture = await sw.capture(join(dir, 'lan.pcap'));
      sw.isolate('a');
      const sent = [frame(BROADCAST, MACS.a, 'blocked but captured'), frame(MACS.a, MACS.b, 'b to a')];
      a.send(sent[0] as Buffer);
      b.send(sent[1] as Buffer);
      await until(() => sw.stats().total.framesReceived === 6, 'two frames in');
      await capture.stop();
      await capture.stop(); // again: nothing
      const { linkType, records } = readPcap(await readFile(capture.path));
      assert.equal(linkType, 1);
      assert.deepEqual(records.map((r) => r.frame.subarray(14).toString()).sort(), [
        'b to a',
        'blocked but captured',
      ]);
      for (const r of records) assert.ok(Math.abs(r.timeMs - Date.now()) < 5000, `record time ${r.timeMs}`);

      const open = await sw.capture(join(dir, 'open.pcap'));
      a.send(frame(BROADCAST, MACS.a, 'last'));
      await until(() => sw.stats().total.framesReceived === 7, 'one more frame');
      await sw.close();
      assert.equal(readPcap(await readFile(open.path)).records.length, 1);
      await assert.rejects(sw.capture(join(dir, 'late.pcap')), /closed/);
      await assert.rejects(sw.capture('' as string), ConfigError);
    });
  });

  test('close() clears delayed and held frames and their timers', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-faults-test-'));
    const socketPath = join(dir, 'switch.sock');
    const sw = await VirtualSwitch.create('lan', socketPath);
    const ports = await connectPorts(sw, socketPath, 2);
    try {
      const [a, b] = ports as [Port, Port];
      sw.claimMac(MACS.a, 'a');
      const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
      const baseline = timers();
      sw.impair({ delayMs: 30_000 });
      a.send(frame(BROADCAST, MACS.a, 'delayed'));
      sw.impair({ from: 'a', reorderPercent: 100 });
      a.send(frame(BROADCAST, MACS.a, 'held'));
      await until(() => sw.stats().total.framesReceived === 2, 'two frames in');
      assert.ok(timers() > baseline, 'no timer armed');
      await sw.close();
      assert.equal(timers(), baseline, 'a timer outlived close()');
      assert.deepEqual(b.payloads(), []);
    } finally {
      for (const port of ports) port.socket.destroy();
      await sw.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

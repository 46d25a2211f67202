import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { VirtualSwitch } from '../../src/network/switch.js';
import { BROADCAST, connectPorts, frame, MAC, type Port, record, settle } from './switch-helpers.js';

/** Creates a switch in a temp dir with three connected ports; cleans everything up after `body`. */
async function withSwitch(
  body: (ctx: { sw: VirtualSwitch; a: Port; b: Port; c: Port; socketPath: string }) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vmkit-switch-test-'));
  const socketPath = join(dir, 'switch.sock');
  const sw = await VirtualSwitch.create('lan', socketPath);
  const ports: Port[] = [];
  try {
    ports.push(...(await connectPorts(sw, socketPath, 3)));
    const [a, b, c] = ports as [Port, Port, Port];
    await body({ sw, a, b, c, socketPath });
  } finally {
    for (const port of ports) port.socket.destroy();
    await sw.close();
    await rm(dir, { recursive: true, force: true });
  }
}

describe('VirtualSwitch', { timeout: 10_000 }, () => {
  test('new VirtualSwitch() from JavaScript is a ConfigError pointing at create, not a crash', () => {
    const Switch = VirtualSwitch as unknown as new () => unknown;
    assert.throws(
      () => new Switch(),
      (error: Error) => error instanceof ConfigError && /VirtualSwitch\.create/.test(error.message),
    );
  });

  test('a broadcast frame reaches every other port but not the sender', async () => {
    await withSwitch(async ({ sw, a, b, c }) => {
      const hello = frame(BROADCAST, MAC.a, 'who has 10.0.0.2?');
      a.send(hello);
      const [atB] = await b.received(1);
      const [atC] = await c.received(1);
      assert.ok(atB?.equals(hello), 'B got a different frame');
      assert.ok(atC?.equals(hello), 'C got a different frame');
      await settle();
      assert.equal(a.frames.length, 0, 'the sender got its own broadcast back');
      assert.equal(sw.framesForwarded, 1);
    });
  });

  test('a multicast destination (group bit set) floods like broadcast', async () => {
    await withSwitch(async ({ a, b, c }) => {
      // Even when the multicast address was once seen as a source, it must not be learned as unicast.
      b.send(frame(BROADCAST, '33:33:00:00:00:01', 'bogus source'));
      await a.received(1);
      await c.received(1);
      const mdns = frame('33:33:00:00:00:01', MAC.a, 'mdns');
      a.send(mdns);
      // B sent nothing else, so this is its first frame; C already had B's broadcast.
      assert.ok((await b.received(1))[0]?.equals(mdns), 'the multicast did not reach B');
      assert.ok((await c.received(2))[1]?.equals(mdns), 'the multicast did not reach C');
      await settle();
      assert.equal(a.frames.length, 1, 'the sender got its own multicast back');
    });
  });

  test('after B sends, a unicast from A to B reaches only B', async () => {
    await withSwitch(async ({ a, b, c }) => {
      b.send(frame(BROADCAST, MAC.b, 'hello from B'));
      await a.received(1);
      await c.received(1);
      const unicast = frame(MAC.b, MAC.a, 'just for B');
      a.send(unicast);
      const frames = await b.received(1);
      assert.equal(frames.length, 1);
      assert.ok(frames[0]?.equals(unicast), 'B got a different frame');
      await settle();
      assert.equal(c.frames.length, 1, 'C saw a unicast meant for B');
      assert.equal(a.frames.length, 1, 'A got its own unicast back');
      // A learned too: B's reply goes only to A.
      const answer = frame(MAC.a, MAC.b, 'reply to A');
      b.send(answer);
      await a.received(2);
      assert.ok(a.frames[1]?.equals(answer), 'A got a different frame');
      await settle();
      assert.equal(c.frames.length, 1, 'C saw a unicast meant for A');
    });
  });

  test('a unicast to an unknown MAC floods to every other port', async () => {
    await withSwitch(async ({ a, b, c }) => {
      const lost = frame(MAC.unknown, MAC.a, 'anyone?');
      a.send(lost);
      assert.ok((await b.received(1))[0]?.equals(lost), 'the frame did not flood to B');
      assert.ok((await c.received(1))[0]?.equals(lost), 'the frame did not flood to C');
      await settle();
      assert.equal(a.frames.length, 0);
    });
  });

  test('a frame split across two writes, even inside the length prefix, is reassembled', async () => {
    await withSwitch(async ({ a, b, c }) => {
      const big = frame(BROADCAST, MAC.a, 'x'.repeat(1400));
      const wire = record(big);
      for (const cut of [2, 4, 10, wire.length - 1]) {
        a.socket.write(wire.subarray(0, cut));
        await settle(30);
        a.socket.write(wire.subarray(cut));
      }
      const atB = await b.received(4);
      const atC = await c.received(4);
      for (const got of [...atB, ...atC]) assert.ok(got.equals(big), 'reassembled frame differs');
    });
  });

  test('several frames in one write are all forwarded, in order', async () => {
    await withSwitch(async ({ a, b }) => {
      const frames = ['one', 'two', 'three'].map((payload) => frame(BROADCAST, MAC.a, payload));
      a.socket.write(Buffer.concat(frames.map(record)));
      const got = await b.received(3);
      assert.deepEqual(
        got.map((f) => f.subarray(14).toString()),
        ['one', 'two', 'three'],
      );
    });
  });

  test('frames shorter than 14 bytes are dropped, and the stream stays in sync', async () => {
    await withSwitch(async ({ sw, a, b, c }) => {
      a.send(Buffer.alloc(0));
      a.send(Buffer.from('ffffffffffff5254000000', 'hex')); // 11 bytes
      a.send(Buffer.alloc(13, 0xff));
      const ok = frame(BROADCAST, MAC.a, 'after the runts');
      a.send(ok);
      const atB = await b.received(1);
      await c.received(1);
      await settle();
      assert.equal(b.frames.length, 1, 'a runt frame was forwarded');
      assert.equal(c.frames.length, 1, 'a runt frame was forwarded');
      assert.ok(atB[0]?.equals(ok), 'B got a different frame');
      assert.equal(sw.framesForwarded, 1);
    });
  });

  test('a port announcing an impossible frame length is dropped, the others keep working', async () => {
    await withSwitch(async ({ sw, a, b, c }) => {
      const bogus = Buffer.alloc(4);
      bogus.writeUInt32BE(0x7fffffff);
      c.socket.write(bogus);
      for (let i = 0; i < 50 && sw.portCount > 2; i++) await settle(10);
      assert.equal(sw.portCount, 2, 'the misbehaving port was disconnected');
      const hello = frame(BROADCAST, MAC.a, 'still here');
      a.send(hello);
      const [atB] = await b.received(1);
      assert.ok(atB?.equals(hello), 'B still gets frames');
    });
  });

  test('a port that disconnects is forgotten: its MAC floods again', async () => {
    await withSwitch(async ({ sw, a, b, c }) => {
      b.send(frame(BROADCAST, MAC.b, 'B is here'));
      await a.received(1);
      await c.received(1);
      b.socket.destroy();
      for (let i = 0; i < 50 && sw.portCount > 2; i++) await settle(10);
      assert.equal(sw.portCount, 2);
      const toB = frame(MAC.b, MAC.a, 'B is gone');
      a.send(toB);
      const atC = await c.received(2);
      assert.ok(atC[1]?.equals(toB), 'the frame for a forgotten MAC did not flood');
    });
  });

  test('close() disconnects the clients and removes the socket file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-switch-test-'));
    const socketPath = join(dir, 'switch.sock');
    const ports: Port[] = [];
    try {
      // A stale file at the path is replaced.
      await writeFile(socketPath, 'stale');
      const sw = await VirtualSwitch.create('lan', socketPath);
      ports.push(...(await connectPorts(sw, socketPath, 3)));
      assert.ok(existsSync(socketPath), 'no socket file while listening');
      // close() waits for the server, which waits for its connections: bound it so a regression fails.
      let timer: NodeJS.Timeout | undefined;
      const closed = await Promise.race([
        sw.close().then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), 3000);
        }),
      ]);
      clearTimeout(timer);
      assert.ok(closed, 'close() did not finish within 3 s');
      for (const port of ports) await port.waitClosed();
      assert.equal(sw.portCount, 0);
      assert.equal(existsSync(socketPath), false, 'the socket file is still there');
      const refused = connect(socketPath);
      await new Promise<void>((resolve, reject) => {
        refused.once('connect', () => reject(new Error('connected to a closed switch')));
        refused.once('error', () => resolve());
      });
      refused.destroy();
    } finally {
      for (const port of ports) port.socket.destroy();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

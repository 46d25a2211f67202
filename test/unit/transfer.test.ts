import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeFrame } from '../../src/agent/transfer.js';

/** A connected socket pair over a unix socket, the reading side paused until `resume`. */
async function socketPair(dir: string): Promise<{ writer: Socket; reader: Socket; close: () => void }> {
  const path = join(dir, 'pair.sock');
  const server = createServer();
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const writer = connect(path);
  const reader = await accepted;
  reader.pause();
  return {
    writer,
    reader,
    close: () => {
      writer.destroy();
      reader.destroy();
      server.close();
    },
  };
}

test('a frame sent through many backpressure waits leaves no listeners behind', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-transfer-'));
  const pair = await socketPair(dir);
  try {
    const size = 8 * 1024 * 1024;
    writeFileSync(join(dir, 'blob'), Buffer.alloc(size, 7));
    const file = await open(join(dir, 'blob'));
    const before = { close: pair.writer.listenerCount('close'), error: pair.writer.listenerCount('error') };
    let drains = 0;
    pair.writer.on('drain', () => drains++);
    let received = 0;
    pair.reader.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    // Reads slowly, so that the writer waits for 'drain' again and again.
    const pump = setInterval(() => {
      pair.reader.resume();
      setImmediate(() => pair.reader.pause());
    }, 5);
    const sent = await writeFrame(pair.writer, 1, file, size, () => false);
    clearInterval(pump);
    await file.close();
    assert.equal(sent.readError, undefined);
    assert.ok(drains > 0, `the writer waited for the reader ${drains} times`);
    assert.equal(pair.writer.listenerCount('close'), before.close);
    assert.equal(pair.writer.listenerCount('error'), before.error);
    assert.ok(received > 0);
  } finally {
    pair.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

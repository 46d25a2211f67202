import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseQmpLine, QmpClient, type QmpEvent } from '../../src/backends/qemu/qmp.js';
import { QmpError, TimeoutError, VmkitError } from '../../src/errors.js';

interface Command {
  execute: string;
  arguments?: Record<string, unknown>;
  id: number;
}

const GREETING = {
  QMP: { version: { qemu: { micro: 0, minor: 2, major: 8 }, package: '' }, capabilities: ['oob'] },
};

/** A scripted QMP peer: the server side of one unix socket connection. */
class Peer {
  /** Every command the client sent, in order, qmp_capabilities included. */
  readonly received: Command[] = [];
  private waiters: Array<() => void> = [];
  private buffer = '';

  constructor(
    readonly socket: Socket,
    private readonly onCommand: (command: Command, peer: Peer) => void,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.buffer += text;
      for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        const command = JSON.parse(line) as Command;
        this.received.push(command);
        this.onCommand(command, this);
        for (const wake of this.waiters.splice(0)) wake();
      }
    });
    socket.on('error', () => {});
  }

  send(message: unknown): void {
    this.socket.write(`${JSON.stringify(message)}\n`);
  }

  /** Resolves once the client has sent `count` commands in all. */
  async commands(count: number): Promise<Command[]> {
    while (this.received.length < count) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return this.received.slice(0, count);
  }
}

/** Answers qmp_capabilities; hands everything else to `handler`. */
const negotiating =
  (handler: (command: Command, peer: Peer) => void = () => {}) =>
  (command: Command, peer: Peer) => {
    if (command.execute === 'qmp_capabilities') peer.send({ return: {}, id: command.id });
    else handler(command, peer);
  };

interface Harness {
  peer: Promise<Peer>;
  socket: Socket;
}

/**
 * Runs `body` against a unix socket served by a scripted peer, then closes everything:
 * client socket, peer socket, server and temp dir.
 */
async function withPeer(
  options: { greet?: boolean; onCommand?: (command: Command, peer: Peer) => void },
  body: (harness: Harness) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vmkit-qmp-test-'));
  const path = join(dir, 'qmp.sock');
  const server: Server = createServer();
  const peer = new Promise<Peer>((resolve) => {
    server.once('connection', (socket) => {
      const p = new Peer(socket, options.onCommand ?? negotiating());
      if (options.greet ?? true) p.send(GREETING);
      resolve(p);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  const socket = connect(path);
  socket.on('error', () => {});
  try {
    await body({ peer, socket });
  } finally {
    socket.destroy();
    const connected = await Promise.race([
      peer,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 10)),
    ]);
    connected?.socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  }
}

const connectClient = (socket: Socket, timeoutMs = 2000) => QmpClient.connect(socket, timeoutMs);

/** Settles after `ms`, to observe that a promise is still pending. */
async function isPending(promise: Promise<unknown>, ms = 50): Promise<boolean> {
  const marker = Symbol('pending');
  const winner = await Promise.race([
    promise.then(
      () => 'settled',
      () => 'settled',
    ),
    new Promise((resolve) => setTimeout(() => resolve(marker), ms)),
  ]);
  return winner === marker;
}

describe('parseQmpLine', () => {
  test('accepts JSON objects of each kind', () => {
    assert.deepEqual(parseQmpLine('{"return": {}, "id": 3}'), { return: {}, id: 3 });
    assert.deepEqual(parseQmpLine('{"event":"STOP","timestamp":{"seconds":1,"microseconds":2}}'), {
      event: 'STOP',
      timestamp: { seconds: 1, microseconds: 2 },
    });
  });

  for (const line of ['[1,2]', '[]', 'null', '42', '"text"', 'true']) {
    test(`rejects the non-object ${line}`, () => {
      assert.throws(
        () => parseQmpLine(line),
        (error: unknown) => {
          assert.ok(error instanceof VmkitError, `expected VmkitError, got ${String(error)}`);
          assert.match(error.message, /not a JSON object/);
          assert.ok(error.message.includes(line), 'the message does not quote the line');
          return true;
        },
      );
    });
  }

  test('rejects text that is not JSON', () => {
    assert.throws(() => parseQmpLine('{"return": '));
    assert.throws(() => parseQmpLine('hello'));
  });
});

describe('QmpClient', { timeout: 10_000 }, () => {
  test('connect waits for the greeting, then negotiates capabilities before resolving', async () => {
    let answerCapabilities: (() => void) | undefined;
    await withPeer(
      {
        greet: false,
        onCommand: (command, peer) => {
          answerCapabilities = () => peer.send({ return: {}, id: command.id });
        },
      },
      async ({ peer, socket }) => {
        const connecting = connectClient(socket);
        const p = await peer;
        assert.ok(await isPending(connecting), 'connect resolved before the greeting');
        assert.equal(p.received.length, 0, 'the client spoke before the greeting');
        // The greeting arrives in two pieces.
        const greeting = `${JSON.stringify(GREETING)}\n`;
        p.socket.write(greeting.slice(0, 10));
        await new Promise((r) => setTimeout(r, 20));
        p.socket.write(greeting.slice(10));
        const [capabilities] = await p.commands(1);
        assert.equal(capabilities?.execute, 'qmp_capabilities');
        assert.equal(typeof capabilities?.id, 'number');
        assert.ok(await isPending(connecting), 'connect resolved before qmp_capabilities was answered');
        assert.ok(answerCapabilities, 'the peer never saw qmp_capabilities');
        answerCapabilities();
        const client = await connecting;
        assert.ok(client instanceof QmpClient, 'connect did not give a QmpClient');
        client.close();
      },
    );
  });

  test('connect times out with TimeoutError when no greeting comes', async () => {
    await withPeer({ greet: false }, async ({ socket }) => {
      const started = performance.now();
      await assert.rejects(connectClient(socket, 150), (error: unknown) => {
        assert.ok(error instanceof TimeoutError, `expected TimeoutError, got ${String(error)}`);
        assert.match(error.message, /greeting/);
        assert.equal(error.timeoutMs, 150);
        return true;
      });
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 140 && elapsed < 2000, `took ${elapsed} ms`);
    });
  });

  test('execute sends the command with its arguments and resolves with the return value', async () => {
    await withPeer(
      {
        onCommand: negotiating((command, peer) =>
          peer.send({ return: { echoed: command.arguments ?? null, name: command.execute }, id: command.id }),
        ),
      },
      async ({ peer, socket }) => {
        const client = await connectClient(socket);
        try {
          assert.deepEqual(
            await client.execute('human-monitor-command', { 'command-line': 'info cpus' }, 2000),
            {
              echoed: { 'command-line': 'info cpus' },
              name: 'human-monitor-command',
            },
          );
          assert.deepEqual(await client.execute('query-status', undefined, 2000), {
            echoed: null,
            name: 'query-status',
          });
          const sent = (await peer).received;
          assert.deepEqual(
            sent.map((c) => c.execute),
            ['qmp_capabilities', 'human-monitor-command', 'query-status'],
          );
          assert.equal(new Set(sent.map((c) => c.id)).size, 3, 'ids must be distinct');
          assert.ok(!('arguments' in (sent[2] as object)), 'no arguments key without arguments');
        } finally {
          client.close();
        }
      },
    );
  });

  test('replies delivered out of order are matched by id', async () => {
    await withPeer({}, async ({ peer, socket }) => {
      const client = await connectClient(socket);
      try {
        const names = ['query-status', 'query-cpus-fast', 'query-block', 'query-name'];
        const results = names.map((name) => client.execute(name, undefined, 2000));
        const p = await peer;
        const commands = (await p.commands(1 + names.length)).slice(1);
        // Answer in the order 3, 1, 4, 2, the last two in one write.
        const reply = (c: Command | undefined) =>
          `${JSON.stringify({ return: { for: c?.execute }, id: c?.id })}\n`;
        p.socket.write(reply(commands[2]));
        p.socket.write(reply(commands[0]));
        p.socket.write(reply(commands[3]) + reply(commands[1]));
        const values = await Promise.all(results);
        assert.deepEqual(
          values,
          names.map((name) => ({ for: name })),
        );
      } finally {
        client.close();
      }
    });
  });

  test('an error reply rejects with QmpError carrying class and description', async () => {
    await withPeer(
      {
        onCommand: negotiating((command, peer) =>
          peer.send({ error: { class: 'DeviceNotFound', desc: "Device 'nic9' not found" }, id: command.id }),
        ),
      },
      async ({ socket }) => {
        const client = await connectClient(socket);
        try {
          await assert.rejects(client.execute('device_del', { id: 'nic9' }, 2000), (error: unknown) => {
            assert.ok(error instanceof QmpError, `expected QmpError, got ${String(error)}`);
            assert.equal(error.command, 'device_del');
            assert.equal(error.errorClass, 'DeviceNotFound');
            assert.equal(error.description, "Device 'nic9' not found");
            assert.match(error.message, /device_del.*DeviceNotFound.*nic9/);
            return true;
          });
        } finally {
          client.close();
        }
      },
    );
  });

  test('an error for one command does not disturb another pending one', async () => {
    await withPeer({}, async ({ peer, socket }) => {
      const client = await connectClient(socket);
      try {
        const good = client.execute('query-status', undefined, 2000);
        const bad = client.execute('cont', undefined, 2000);
        const outcomes = Promise.allSettled([good, bad]);
        const p = await peer;
        const [, first, second] = await p.commands(3);
        p.send({ error: { class: 'GenericError', desc: 'nope' }, id: second?.id });
        p.send({ return: { running: true }, id: first?.id });
        const [goodOutcome, badOutcome] = await outcomes;
        assert.deepEqual(goodOutcome, { status: 'fulfilled', value: { running: true } });
        assert.equal(badOutcome?.status, 'rejected');
        assert.ok(
          badOutcome?.status === 'rejected' && badOutcome.reason instanceof QmpError,
          `expected QmpError for cont, got ${JSON.stringify(badOutcome)}`,
        );
      } finally {
        client.close();
      }
    });
  });

  test('asynchronous events reach on("event") and waitForEvent, interleaved with replies', async () => {
    await withPeer({}, async ({ peer, socket }) => {
      const client = await connectClient(socket);
      try {
        const seen: QmpEvent[] = [];
        client.on('event', (event) => seen.push(event));
        const shutdown = client.waitForEvent(
          'SHUTDOWN',
          2000,
          (event) => event.data?.reason === 'guest-shutdown',
        );
        const reply = client.execute('system_powerdown', undefined, 2000);
        const p = await peer;
        const [, command] = await p.commands(2);
        const timestamp = { seconds: 1700000000, microseconds: 5 };
        p.send({ event: 'POWERDOWN', timestamp });
        p.send({ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' }, timestamp });
        p.send({ return: {}, id: command?.id });
        p.send({ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp });
        assert.deepEqual(await reply, {});
        const event = await shutdown;
        assert.deepEqual(event, {
          event: 'SHUTDOWN',
          data: { guest: true, reason: 'guest-shutdown' },
          timestamp,
        });
        assert.deepEqual(
          seen.map((e) => `${e.event}:${e.data?.reason ?? ''}`),
          ['POWERDOWN:', 'SHUTDOWN:host-qmp-quit', 'SHUTDOWN:guest-shutdown'],
        );
        assert.equal(client.listenerCount('event'), 1, 'waitForEvent must remove its listener');
      } finally {
        client.close();
      }
    });
  });

  test('waitForEvent rejects with TimeoutError when the event does not come', async () => {
    await withPeer({}, async ({ peer, socket }) => {
      const client = await connectClient(socket);
      try {
        const waiting = client.waitForEvent('RESET', 150);
        (await peer).send({ event: 'STOP' });
        await assert.rejects(waiting, (error: unknown) => {
          assert.ok(error instanceof TimeoutError, `expected TimeoutError, got ${String(error)}`);
          assert.match(error.message, /RESET/);
          return true;
        });
        assert.equal(client.listenerCount('event'), 0, 'the listener must be removed on timeout');
      } finally {
        client.close();
      }
    });
  });

  test('waitForEvent rejects at once when the peer closes (QEMU exited: no event will come)', async () => {
    await withPeer({}, async ({ peer, socket }) => {
      const client = await connectClient(socket);
      try {
        const waiting = client.waitForEvent('MIGRATION', 5_000);
        const started = performance.now();
        (await peer).socket.end();
        await assert.rejects(waiting, (error: unknown) => {
          assert.ok(!(error instanceof TimeoutError), 'must not wait for the timeout');
          assert.match(String(error), /closed while waiting for event MIGRATION/);
          return true;
        });
        assert.ok(performance.now() - started < 2000, 'rejection took too long');
        await assert.rejects(client.waitForEvent('MIGRATION', 5_000), /closed/);
      } finally {
        client.close();
      }
    });
  });

  test('a command with no reply rejects with TimeoutError within its timeout; the client stays usable', async () => {
    await withPeer(
      {
        onCommand: negotiating((command, peer) => {
          if (command.execute === 'query-status')
            peer.send({ return: { status: 'running' }, id: command.id });
        }),
      },
      async ({ peer, socket }) => {
        const client = await connectClient(socket);
        try {
          const started = performance.now();
          await assert.rejects(client.execute('stop', undefined, 200), (error: unknown) => {
            assert.ok(error instanceof TimeoutError, `expected TimeoutError, got ${String(error)}`);
            assert.equal(error.timeoutMs, 200);
            assert.match(error.message, /stop/);
            return true;
          });
          const elapsed = performance.now() - started;
          assert.ok(elapsed >= 190 && elapsed < 2000, `took ${elapsed} ms`);
          // A late reply to the timed-out command is ignored, and later commands still work.
          const p = await peer;
          p.send({ return: {}, id: p.received[1]?.id });
          assert.deepEqual(await client.execute('query-status', undefined, 2000), { status: 'running' });
        } finally {
          client.close();
        }
      },
    );
  });

  test('the peer closing the socket rejects pending commands promptly, and later ones too', async () => {
    await withPeer({}, async ({ peer, socket }) => {
      const client = await connectClient(socket);
      try {
        const pending = [
          client.execute('query-status', undefined, 3000),
          client.execute('query-block', undefined, 3000),
        ];
        const outcomes = Promise.allSettled(pending);
        const p = await peer;
        await p.commands(3);
        const started = performance.now();
        p.socket.end();
        await outcomes;
        assert.ok(performance.now() - started < 2000, 'rejection took too long');
        for (const command of pending) {
          await assert.rejects(command, (error: unknown) => {
            assert.ok(error instanceof VmkitError, `expected VmkitError, got ${String(error)}`);
            assert.ok(!(error instanceof TimeoutError), 'must not wait for the timeout');
            assert.match(error.message, /closed/);
            return true;
          });
        }
        await assert.rejects(client.execute('query-status', undefined, 3000), /closed/);
      } finally {
        client.close();
      }
    });
  });

  test('close() rejects pending commands', async () => {
    await withPeer({}, async ({ socket }) => {
      const client = await connectClient(socket);
      const pending = client.execute('query-status', undefined, 3000);
      client.close();
      await assert.rejects(pending, /closed by vmkit/);
      await assert.rejects(client.execute('query-status', undefined, 3000), /closed by vmkit/);
    });
  });

  test('lines that are not JSON objects, and replies with unknown ids, are ignored', async () => {
    await withPeer({}, async ({ peer, socket }) => {
      const client = await connectClient(socket);
      try {
        const result = client.execute('query-name', undefined, 2000);
        const p = await peer;
        const [, command] = await p.commands(2);
        p.socket.write('garbage line\n[1,2,3]\n\n{"return": {"name": "wrong"}, "id": 9999}\n');
        p.send({ return: { name: 'vm1' }, id: command?.id });
        assert.deepEqual(await result, { name: 'vm1' });
      } finally {
        client.close();
      }
    });
  });
});

import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { QmpConnectionError, QmpError } from '../../errors.js';
import { LineSplitter } from '../../util/lines.js';
import { waitWithin } from '../../util/time.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

type QmpMessage =
  | { QMP: unknown }
  | { return: unknown; id?: number }
  | { error: { class: string; desc: string }; id?: number }
  | QmpEvent;

/** QMP replies are small JSON lines; a longer one is not QMP and is cut rather than buffered. */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

/** Parses one line of QMP output; throws on anything that is not a JSON object. */
export function parseQmpLine(line: string): QmpMessage {
  const message = JSON.parse(line) as unknown;
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw new QmpConnectionError(`QMP sent something that is not a JSON object: ${line.slice(0, 200)}`);
  }
  return message as QmpMessage;
}

interface Waiting {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

/**
 * A QMP client over a connected socket: waits for the greeting, negotiates capabilities,
 * matches replies to commands by id and delivers asynchronous events to listeners.
 */
export class QmpClient extends EventEmitter<{ event: [QmpEvent] }> {
  private readonly lines = new LineSplitter(MAX_LINE_BYTES);
  private readonly waiting = new Map<number, Waiting>();
  private nextId = 1;
  private greeted?: () => void;
  private closedError?: Error;
  private readonly closeWaiters = new Set<(error: Error) => void>();

  private constructor(private readonly socket: Socket) {
    super();
    socket.on('data', (chunk: Buffer) =>
      this.lines.push(chunk, (line) => this.onLine(line.toString('utf8'))),
    );
    socket.on('close', () => this.failAll(new QmpConnectionError('QMP connection closed')));
    socket.on('error', (error) =>
      this.failAll(new QmpConnectionError(`QMP connection failed: ${error.message}`)),
    );
  }

  static async connect(socket: Socket, timeoutMs: number): Promise<QmpClient> {
    const client = new QmpClient(socket);
    await waitWithin<void>(timeoutMs, 'the QMP greeting', (resolve, reject) => {
      const closed = () => reject(new QmpConnectionError('QMP connection closed before the greeting'));
      socket.once('close', closed);
      client.greeted = resolve;
      return () => {
        socket.off('close', closed);
        client.greeted = undefined;
      };
    });
    await client.execute('qmp_capabilities', undefined, timeoutMs);
    return client;
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return waitWithin<T>(timeoutMs, `the QMP reply to ${command}`, (resolve, reject) => {
      this.waiting.set(id, { command, resolve: resolve as (value: unknown) => void, reject });
      this.socket.write(`${JSON.stringify({ execute: command, arguments: args, id })}\n`);
      return () => this.waiting.delete(id);
    });
  }

  /**
   * Resolves with the first event named `name` (optionally matching `filter`) after the call;
   * rejects when the connection closes first (QEMU exited: no event will come).
   */
  waitForEvent(name: string, timeoutMs: number, filter?: (event: QmpEvent) => boolean): Promise<QmpEvent> {
    if (this.closedError) return Promise.reject(this.closedError);
    return waitWithin<QmpEvent>(timeoutMs, `QMP event ${name}`, (resolve, reject) => {
      const onEvent = (event: QmpEvent) => {
        if (event.event === name && (!filter || filter(event))) resolve(event);
      };
      const onClose = (error: Error) =>
        reject(new QmpConnectionError(`${error.message} while waiting for event ${name}`));
      this.on('event', onEvent);
      this.closeWaiters.add(onClose);
      return () => {
        this.off('event', onEvent);
        this.closeWaiters.delete(onClose);
      };
    });
  }

  close(): void {
    this.failAll(new QmpConnectionError('QMP connection closed by vmkit'));
    this.socket.destroy();
  }

  private onLine(line: string): void {
    if (!line.trim()) return;
    let message: QmpMessage;
    try {
      message = parseQmpLine(line);
    } catch {
      return;
    }
    if ('QMP' in message) {
      this.greeted?.();
      return;
    }
    if ('event' in message) {
      this.emit('event', message);
      return;
    }
    const id = 'id' in message ? message.id : undefined;
    const waiting = id === undefined ? undefined : this.waiting.get(id);
    if (!waiting || id === undefined) return;
    this.waiting.delete(id);
    if ('error' in message)
      waiting.reject(new QmpError(waiting.command, message.error.class, message.error.desc));
    else waiting.resolve(message.return);
  }

  private failAll(error: Error): void {
    this.closedError ??= error;
    for (const waiting of [...this.waiting.values()]) {
      waiting.reject(
        new QmpConnectionError(`${error.message} while waiting for the reply to ${waiting.command}`),
      );
    }
    this.waiting.clear();
    for (const waiter of [...this.closeWaiters]) waiter(this.closedError);
  }
}

import { connect, type Socket } from 'node:net';
import type { RawResult } from '../agent/backdoor.js';
import { CommandFailedError, MachineCrashedError } from '../errors.js';
import { LineSplitter } from '../util/lines.js';
import { AgentLentError } from './hub-agent.js';
import { type HubReply, type HubRequest, hubSocket } from './hub-protocol.js';

/** A command's end as the hub reports it: the guest agent's own result. */
export type RunResult = RawResult;

/** How long after a command's own timeout the host waits for the hub's answer. */
const HUB_GRACE_MS = 15_000;

/** The error a hub's error reply stands for: its agent lent to a Machine, or the VM's failure. */
export function hubError(vm: string, reply: { message: string; name?: string }): Error {
  return reply.name === 'AgentLentError'
    ? new AgentLentError(reply.message)
    : new MachineCrashedError(vm, reply.message, '');
}

/** One connection to a VM's agent hub. */
export class HubClient {
  private readonly lines = new LineSplitter();
  private readonly listeners = new Set<(reply: HubReply) => void>();
  private closedError?: Error;
  private closing = false;

  private constructor(
    readonly vm: string,
    private readonly socket: Socket,
  ) {
    socket.on('data', (chunk: Buffer) =>
      this.lines.push(chunk, (bytes) => {
        const line = bytes.toString('utf8');
        if (line.trim() === '') return;
        const reply = JSON.parse(line) as HubReply;
        for (const listener of [...this.listeners]) listener(reply);
      }),
    );
    socket.on('error', () => {});
    socket.on('close', () => {
      if (this.closing) return;
      this.closedError ??= new MachineCrashedError(vm, 'the agent hub went away (did QEMU die?)', '');
      for (const listener of [...this.listeners])
        listener({ type: 'error', message: this.closedError.message });
    });
  }

  static connect(runDir: string, vm: string, timeoutMs = 5000): Promise<HubClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(hubSocket(runDir));
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new MachineCrashedError(vm, `the agent hub did not accept within ${timeoutMs} ms`, ''));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new HubClient(vm, socket));
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(new MachineCrashedError(vm, `cannot reach the agent hub: ${error.message}`, ''));
      });
    });
  }

  send(request: HubRequest): void {
    this.socket.write(`${JSON.stringify(request)}\n`);
  }

  onReply(listener: (reply: HubReply) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Sends a request answered by one `result` reply. The guest bounds the command itself; the
   * host gives up too if no answer comes `HUB_GRACE_MS` after that (a wedged hub).
   */
  request(request: HubRequest & { timeoutMs: number }): Promise<RunResult> {
    return this.exchange(request, request.timeoutMs + HUB_GRACE_MS, (reply) =>
      reply.type === 'result'
        ? {
            status: reply.status,
            timedOut: reply.timedOut,
            stdout: Buffer.from(reply.stdout, 'base64'),
            stderr: Buffer.from(reply.stderr, 'base64'),
          }
        : undefined,
    );
  }

  /**
   * Asks the hub to let go of the VM's agent for this connection, once no command runs in it
   * (at most `timeoutMs`); the hub takes it back when this connection closes.
   */
  async lend(borrower: string, timeoutMs: number): Promise<void> {
    await this.exchange({ type: 'lend', borrower, timeoutMs }, timeoutMs + HUB_GRACE_MS, (reply) =>
      reply.type === 'lent' ? true : undefined,
    );
  }

  /** Sends `request` and waits (at most `waitMs`) for the reply `answer` takes, or an error. */
  private exchange<T>(
    request: HubRequest,
    waitMs: number,
    answer: (reply: HubReply) => T | undefined,
  ): Promise<T> {
    return new Promise((resolve, reject) => {
      const limit = setTimeout(() => {
        off();
        reject(
          new MachineCrashedError(
            this.vm,
            `the agent hub did not answer ${request.type} within ${waitMs} ms`,
            '',
          ),
        );
      }, waitMs);
      const off = this.onReply((reply) => {
        const answered = reply.type === 'error' ? undefined : answer(reply);
        if (reply.type !== 'error' && answered === undefined) return;
        clearTimeout(limit);
        off();
        if (reply.type === 'error') reject(hubError(this.vm, reply));
        else resolve(answered as T);
      });
      this.send(request);
    });
  }

  run(script: string, timeoutMs = 60_000): Promise<RunResult> {
    return this.request({ type: 'run', script, timeoutMs });
  }

  /** Runs `script`; throws a CommandFailedError with its output when it exits non-zero. */
  async succeed(script: string, timeoutMs = 60_000): Promise<string> {
    const result = await this.run(script, timeoutMs);
    if (result.status !== 0) {
      throw new CommandFailedError(script, result.status, result.stdout.toString(), result.stderr.toString());
    }
    return result.stdout.toString();
  }

  close(): void {
    this.closing = true;
    this.socket.destroy();
  }
}

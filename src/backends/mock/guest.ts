import type { Socket } from 'node:net';
import { BANNER } from '../../agent/framing.js';
import type { MockScriptError } from '../../errors.js';
import type { MockAnswer, MockScript } from './script.js';

/** How the mock guest ended: powered off, or gave up at a command its script does not answer. */
export type MockGuestEnd = { powerOff: true } | { error: MockScriptError };

const b64 = (text: string) => Buffer.from(text).toString('base64');

/** Requests whose header line is followed by a body of <length> bytes, and where the length is. */
const BODY_AT: Record<string, number> = { X: 3, P: 3, I: 3 };

const SIGNALS: Record<string, number> = { HUP: 1, INT: 2, KILL: 9, TERM: 15 };

/**
 * The guest end of the backdoor for the mock backend: it speaks the guest agent's wire format
 * (guest/agent/main.c) on the command channel, and answers every command from the script
 * instead of running it. Started processes (P) print their scripted output and exit at once.
 */
export class MockGuest {
  private buffer = Buffer.alloc(0);
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Started processes that run on (a step that times out), by id: how to end one on a signal. */
  private readonly running = new Map<number, (status: number) => void>();
  private stopped = false;

  constructor(
    private readonly machine: string,
    private readonly script: MockScript,
    private readonly shell: Socket,
    private readonly ended: (how: MockGuestEnd) => void,
  ) {
    shell.on('data', (chunk: Buffer) => this.push(chunk));
    this.write(`\n${BANNER}\n`);
  }

  /** The guest is gone: nothing more is answered, no timer is left. */
  stop(): void {
    this.stopped = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.running.clear();
  }

  private write(text: string): void {
    if (!this.stopped && !this.shell.destroyed) this.shell.write(text);
  }

  private later(ms: number, action: () => void): void {
    if (ms <= 0) {
      action();
      return;
    }
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.stopped) action();
    }, ms);
    this.timers.add(timer);
  }

  private push(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const newline = this.buffer.indexOf(10);
      if (newline < 0) return;
      const words = this.buffer.subarray(0, newline).toString('utf8').split(' ');
      const bodyAt = BODY_AT[words[0] ?? ''];
      const length = bodyAt === undefined ? 0 : Number(words[bodyAt]);
      if (this.buffer.length < newline + 1 + length) return; // the body is still on its way
      const body = this.buffer.subarray(newline + 1, newline + 1 + length).toString('utf8');
      this.buffer = this.buffer.subarray(newline + 1 + length);
      if (!this.stopped) this.request(words, body);
    }
  }

  private request(words: string[], body: string): void {
    const [kind, idText = '0', third = '0'] = words;
    const id = Number(idText);
    if (kind === 'Y') this.run(id, Number(third), words.slice(3).join(' '));
    else if (kind === 'X') this.run(id, Number(third), body);
    else if (kind === 'P') this.start(id, Number(third), body);
    else if (kind === 'K') {
      const end = this.running.get(Number(third));
      this.reply(id, { status: 0 });
      end?.(128 + (SIGNALS[words[3] ?? ''] ?? 15));
    } else if (kind === 'I' || kind === 'C') this.reply(id, { status: 0 });
    // U and D never come: the mock has no transfer port.
    else this.reply(id, { status: 1, stderr: `the mock guest does not serve ${kind} requests\n` });
  }

  /** The answer to a command, or undefined once the guest has ended over it. */
  private answer(command: string): MockAnswer | undefined {
    const answer = this.script.answer(this.machine, command);
    if ('powerOff' in answer && !answer.powerOff) return answer;
    this.stop();
    this.ended('powerOff' in answer ? { powerOff: true } : { error: answer });
    return undefined;
  }

  private run(id: number, timeoutSeconds: number, command: string): void {
    const answer = this.answer(command);
    if (!answer) return;
    const wait = answer.timedOut ? Math.max(answer.delayMs, timeoutSeconds * 1000) : answer.delayMs;
    this.later(wait, () => this.reply(id, answer));
  }

  private start(id: number, timeoutSeconds: number, command: string): void {
    const answer = this.answer(command);
    if (!answer) return;
    this.reply(id, { status: 0 });
    const exit = (status: number, timedOut: boolean) => {
      if (!this.running.delete(id)) return;
      this.write(`<<<VMKIT:Z ${id} ${status} ${timedOut ? 1 : 0}>>>\n`);
    };
    this.running.set(id, (status) => exit(status, false));
    this.later(answer.delayMs, () => {
      if (answer.stdout) this.write(`<<<VMKIT:O ${id} 1 ${b64(answer.stdout)}>>>\n`);
      if (answer.stderr) this.write(`<<<VMKIT:O ${id} 2 ${b64(answer.stderr)}>>>\n`);
      if (!answer.timedOut) return exit(answer.status, false);
      // Runs until its timeout (none: until it is signalled), as a command that never ends.
      if (timeoutSeconds > 0) this.later(timeoutSeconds * 1000, () => exit(answer.status, true));
    });
  }

  private reply(id: number, answer: Partial<MockAnswer>): void {
    this.write(
      `<<<VMKIT:R ${id} ${answer.status ?? 0} ${answer.timedOut ? 1 : 0}>>>\n${b64(answer.stdout ?? '')}\n${b64(answer.stderr ?? '')}\n<<<VMKIT:E ${id}>>>\n`,
    );
  }
}

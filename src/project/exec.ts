import type { Readable, Writable } from 'node:stream';
import { shellQuote } from '../util/shell.js';
import type { CommandSpec } from './config.js';
import { type HubClient, hubError } from './hub-client.js';

export interface StreamOptions {
  /** Fed to the command's stdin; its end closes the command's stdin. None: stdin closed at once. */
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  /**
   * Ctrl-C here stops the command there: SIGTERM to its session (commands the backdoor starts
   * run in the background, where SIGINT is ignored), a second one SIGKILL.
   */
  forwardSignals?: boolean;
}

/** The script that runs `argv` as root in `cwd`. */
export function commandScript(argv: string[], cwd: string): string {
  return `cd ${shellQuote(cwd)} && exec ${argv.map(shellQuote).join(' ')}`;
}

/** The script of a named command: its shell text in its folder. */
export function namedCommandScript(spec: CommandSpec, workdir: string): string {
  return `cd ${shellQuote(spec.cwd ?? workdir)} && ${spec.run}`;
}

/**
 * Runs `script` in the guest with output streaming live; resolves with its exit status (124
 * when the guest's timeout killed it, 130 when interrupted three times and it still had not exited).
 */
export function streamCommand(hub: HubClient, script: string, options: StreamOptions = {}): Promise<number> {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  return new Promise<number>((resolve, reject) => {
    let interrupts = 0;
    const onSignal = () => {
      interrupts++;
      hub.send({ type: 'signal', signal: interrupts === 1 ? 'TERM' : 'KILL' });
      if (interrupts >= 3) finish(130);
    };
    const feed = (chunk: Buffer) => hub.send({ type: 'stdin', data: Buffer.from(chunk).toString('base64') });
    const endInput = () => hub.send({ type: 'eof' });
    const finish = (code: number, error?: Error) => {
      off();
      if (options.forwardSignals) {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      options.stdin?.off('data', feed);
      options.stdin?.off('end', endInput);
      options.stdin?.pause();
      if (error) reject(error);
      else resolve(code);
    };
    const off = hub.onReply((reply) => {
      switch (reply.type) {
        case 'started':
          if (options.stdin) {
            options.stdin.on('data', feed);
            options.stdin.once('end', endInput);
          } else {
            endInput();
          }
          return;
        case 'output':
          (reply.stream === 'stdout' ? stdout : stderr).write(Buffer.from(reply.data, 'base64'));
          return;
        case 'exit':
          finish(reply.timedOut ? 124 : reply.status);
          return;
        case 'error':
          finish(1, hubError(hub.vm, reply));
          return;
        default:
          return;
      }
    });
    if (options.forwardSignals) {
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
    }
    hub.send({ type: 'spawn', script });
  });
}

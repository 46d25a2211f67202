import type { Readable, Writable } from 'node:stream';
import type { GuestProcess } from '../agent/process.js';
import type { SerialConsole } from '../console/serial.js';

export interface InteractOptions {
  /** What is typed (default: this process's stdin). */
  input?: Readable;
  /** Where the guest's output goes (default: this process's stdout). */
  output?: Writable;
}

/**
 * shellInteract: joins `input`/`output` to a root shell in the guest until the shell exits or
 * the input ends (Ctrl-D). Lines run as typed; there is no prompt.
 */
export async function interactWithShell(shell: GuestProcess, options: InteractOptions): Promise<void> {
  const input = options.input ?? process.stdin;
  const output = options.output ?? process.stdout;
  shell.stdout.on('data', (chunk: Buffer) => output.write(chunk));
  const onData = (chunk: Buffer) => shell.stdin.write(chunk);
  const onEnd = () => shell.stdin.end();
  input.on('data', onData);
  input.once('end', onEnd);
  try {
    await shell.exited;
  } finally {
    input.off('data', onData);
    input.off('end', onEnd);
    if (input === process.stdin) process.stdin.pause();
  }
}

/** consoleInteract: joins `input`/`output` to the serial console until the input ends. */
export async function interactWithConsole(
  console: SerialConsole,
  send: (text: string) => void,
  options: InteractOptions,
): Promise<void> {
  const input = options.input ?? process.stdin;
  const output = options.output ?? process.stdout;
  const onConsole = (text: string) => output.write(text);
  const onData = (chunk: Buffer) => send(chunk.toString('utf8'));
  console.on('data', onConsole);
  input.on('data', onData);
  try {
    await new Promise<void>((resolve) => {
      input.once('end', resolve);
      input.once('close', resolve);
    });
  } finally {
    console.off('data', onConsole);
    input.off('data', onData);
    if (input === process.stdin) process.stdin.pause();
  }
}

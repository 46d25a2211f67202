import type { RawResult } from '../../agent/backdoor.js';
import { GuestProcess } from '../../agent/process.js';
import { VmkitError } from '../../errors.js';
import { shellQuote } from '../../util/shell.js';
import { MAX_TIMER_MS } from '../../util/time.js';
import type { InstanceAgents } from './agents.js';

/** Where a streamed command's output goes as the guest produces it, and how much is taken. */
export interface OutputStreams {
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  /** stdout and stderr together past this many bytes: the command is killed, OutputLimitError. */
  maxOutputBytes?: number;
}

/** A command wrote more than its caller takes; it was killed (the machine stays usable). */
export class OutputLimitError extends VmkitError {
  override name = 'OutputLimitError';
  constructor(
    readonly command: string[],
    readonly limitBytes: number,
  ) {
    super(
      `command ${JSON.stringify(command.join(' '))} wrote more than ${limitBytes} bytes of output: it was killed (send less output, e.g. to a file)`,
    );
  }
}

/** Where a command runs: the instance's folder and name, the process's shared agents. */
export interface ExecTarget {
  agents: InstanceAgents;
  dir: string;
  name: string;
  /** Asked when this call opens the instance's agent (after waiting its turn): throws to refuse. */
  admit: () => void;
}

/**
 * Runs a command (argv, quoted for sh) in the running instance; returns status and output.
 * With `stream`, it runs as a guest process whose output is handed on as it arrives. Concurrent
 * calls share the instance's agent; waiting for it (another process holds it) takes at most
 * `timeoutMs` too.
 */
export async function execVm(
  { agents, dir, name, admit }: ExecTarget,
  command: string[],
  timeoutMs: number,
  stream?: OutputStreams,
): Promise<RawResult> {
  return agents.use(dir, name, timeoutMs, admit, async (vm) => {
    const agent = vm.channel;
    const script = command.map(shellQuote).join(' ');
    if (!stream) return agent.run(script, timeoutMs);
    const limit = stream.maxOutputBytes;
    const kept = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
    let total = 0;
    let over = false;
    let started: GuestProcess | undefined;
    const stop = () => void started?.kill('KILL').catch(() => {}); // it may have exited already
    const take = (which: 'stdout' | 'stderr', onward?: (chunk: Buffer) => void) => (chunk: Buffer) => {
      if (over) return;
      total += chunk.length;
      if (limit !== undefined && total > limit) {
        over = true;
        stop();
        return;
      }
      onward?.(chunk);
      if (limit !== undefined && !onward) kept[which].push(chunk);
    };
    started = await GuestProcess.start(
      agent,
      name,
      script,
      { timeoutMs, onStdout: take('stdout', stream.onStdout), onStderr: take('stderr', stream.onStderr) },
      () => vm.consoleTail(),
    );
    if (over) stop();
    // The guest ends it at timeoutMs; the host waits a little longer for that exit to arrive.
    const exit = await started.wait(Math.min(timeoutMs + 15_000, MAX_TIMER_MS));
    if (over && limit !== undefined) throw new OutputLimitError(command, limit);
    const all = (which: 'stdout' | 'stderr', tail: Buffer) =>
      limit !== undefined && !stream[which === 'stdout' ? 'onStdout' : 'onStderr']
        ? Buffer.concat(kept[which])
        : tail;
    return {
      status: exit.exitCode,
      timedOut: exit.timedOut,
      stdout: all('stdout', started.stdoutBytes),
      stderr: all('stderr', started.stderrBytes),
    };
  });
}

/**
 * Runs each script `next()` hands out in the running instance over one attachment, until it
 * hands out undefined; `onResult` sees every result. For `instance shell`.
 */
export async function shellVm(
  { agents, dir, name, admit }: ExecTarget,
  next: () => Promise<string | undefined>,
  onResult: (script: string, result: RawResult) => void,
  timeoutMs: number,
): Promise<number> {
  return agents.use(dir, name, timeoutMs, admit, async (vm) => {
    const agent = vm.channel;
    let count = 0;
    for (let script = await next(); script !== undefined; script = await next()) {
      if (script.trim() === '') continue;
      onResult(script, await agent.run(script, timeoutMs));
      count++;
    }
    return count;
  });
}

import type { RawResult } from '../agent/backdoor.js';
import { GuestProcess } from '../agent/process.js';
import { shellQuote } from '../util/shell.js';
import { MAX_TIMER_MS } from '../util/time.js';
import { withVm } from './vm.js';

/** Where a streamed command's output goes as the guest produces it. */
export interface OutputStreams {
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
}

/**
 * Runs a command (argv, quoted for sh) in the running instance; returns status and output.
 * With `stream`, it runs as a guest process whose output is handed on as it arrives.
 */
export async function execVm(
  dir: string,
  name: string,
  command: string[],
  timeoutMs: number,
  stream?: OutputStreams,
): Promise<RawResult> {
  return withVm(dir, name, async (vm) => {
    const agent = await vm.agent();
    const script = command.map(shellQuote).join(' ');
    if (!stream) return agent.run(script, timeoutMs);
    const started = await GuestProcess.start(agent, name, script, { timeoutMs, ...stream }, () =>
      vm.consoleTail(),
    );
    // The guest ends it at timeoutMs; the host waits a little longer for that exit to arrive.
    const exit = await started.wait(Math.min(timeoutMs + 15_000, MAX_TIMER_MS));
    return {
      status: exit.exitCode,
      timedOut: exit.timedOut,
      stdout: started.stdoutBytes,
      stderr: started.stderrBytes,
    };
  });
}

/**
 * Runs each script `next()` hands out in the running instance over one attachment, until it
 * hands out undefined; `onResult` sees every result. For `instance shell`.
 */
export async function shellVm(
  dir: string,
  name: string,
  next: () => Promise<string | undefined>,
  onResult: (script: string, result: RawResult) => void,
  timeoutMs: number,
): Promise<number> {
  return withVm(dir, name, async (vm) => {
    const agent = await vm.agent();
    let count = 0;
    for (let script = await next(); script !== undefined; script = await next()) {
      if (script.trim() === '') continue;
      onResult(script, await agent.run(script, timeoutMs));
      count++;
    }
    return count;
  });
}

import type { Machine } from '../machine/machine.js';
import type { RunLog } from '../util/log.js';

/** How much of a line without a newline is held back before it is shown anyway. */
const PARTIAL_LINE_BYTES = 4096;

/**
 * Shows the output of every command of `machine` in the run's log as the guest produces it,
 * one log line per output line, prefixed by the machine's name (`>` stdout, `!` stderr). With
 * `verbose`, each command and how it ended are logged too.
 */
export function showCommandOutput(machine: Machine, log: RunLog, verbose: boolean): () => void {
  return machine.observeCommands((command, method) => {
    if (verbose) log.line(machine.name, `$ ${command}${method === 'spawn' ? '  (spawned)' : ''}`);
    const pending = { stdout: '', stderr: '' };
    const flush = (stream: 'stdout' | 'stderr', all: boolean) => {
      const lines = pending[stream].split('\n');
      pending[stream] = all ? '' : (lines.pop() ?? '');
      if (all && lines.at(-1) === '') lines.pop();
      for (const line of lines) log.line(machine.name, `${stream === 'stdout' ? '>' : '!'} ${line}`);
    };
    return {
      output: (stream, chunk) => {
        pending[stream] += chunk.toString('utf8');
        flush(stream, pending[stream].length > PARTIAL_LINE_BYTES);
      },
      ended: (outcome) => {
        flush('stdout', true);
        flush('stderr', true);
        if (!verbose) return;
        const how = outcome.error
          ? `${outcome.error.name}`
          : outcome.timedOut
            ? 'timed out'
            : `exit ${outcome.exitCode}`;
        log.line(machine.name, `  ${how} after ${outcome.durationMs} ms`);
      },
    };
  });
}

/**
 * Process-wide exit and signal hooks. Signals belong to the process, not to one runtime, so this
 * is the one place that keeps a list: every runtime with a run folder registers here, and on
 * exit, SIGINT, SIGTERM or SIGHUP each one kills its VMMs and removes its folder.
 */

export interface ExitHooks {
  /** Synchronous: kills the runtime's processes (safe inside a signal or exit handler). */
  killProcesses(): void;
  /** Synchronous: everything killProcesses does, plus removing the run folder. */
  cleanupAtExit(): void;
}

const registered = new Set<ExitHooks>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let installed = false;

export function registerExitHooks(hooks: ExitHooks): () => void {
  registered.add(hooks);
  if (!installed) {
    installed = true;
    process.once('exit', cleanupAll);
    for (const signal of SIGNALS) process.on(signal, onSignal);
  }
  return () => registered.delete(hooks);
}

function cleanupAll(): void {
  for (const hooks of registered) hooks.cleanupAtExit();
}

/**
 * Kills every VMM at once, then lets the signal do what it would have done. When the program
 * installed its own handler for the signal, that handler decides whether and how to exit.
 */
function onSignal(signal: NodeJS.Signals): void {
  for (const hooks of registered) hooks.killProcesses();
  if (process.listenerCount(signal) > 1) return;
  cleanupAll();
  for (const s of SIGNALS) process.off(s, onSignal);
  process.kill(process.pid, signal);
}

/**
 * Process-wide exit and signal hooks. Signals belong to the process, not to one runtime, so this
 * is the one place that keeps a list: every runtime with a run folder and every host tool running
 * registers here. At SIGINT, SIGTERM or SIGHUP each runtime kills its VMMs; at exit, or at a
 * signal the program leaves to its default (the end of the process), each runtime also removes
 * its folder and each tool is killed.
 */

export interface ExitHooks {
  /** Synchronous: kills what must not outlive a signal (safe inside a signal or exit handler). */
  killProcesses(): void;
  /** Synchronous: everything killProcesses does, and the rest of the cleanup at exit. */
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
    // First in line, whenever it is installed: a program's own handler added with once() is
    // still counted below while this runs (Node removes it only as it calls it).
    for (const signal of SIGNALS) process.prependListener(signal, onSignal);
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

/**
 * Process-wide exit and signal hooks. Signals belong to the process, not to one runtime, so this
 * is the one place that keeps a list: every runtime with a run folder and every host tool running
 * registers here. At SIGINT, SIGTERM or SIGHUP each runtime kills its VMMs; at exit, or at a
 * signal the program leaves to its default (the end of the process), each runtime also removes
 * its folder and each tool is killed. Either way the process then waits (at most
 * DEATH_WAIT_MS) until what it killed is gone, so that nothing it started outlives it: a QEMU
 * with a large RAM takes a moment to die after SIGKILL.
 */
import { processRunsSync } from './scratch.js';

/** How long an ending process waits for the processes it killed to be gone. */
const DEATH_WAIT_MS = 5000;

export interface ExitHooks {
  /**
   * Synchronous: kills what must not outlive a signal (safe inside a signal or exit handler).
   * Returns the ids of the processes it killed.
   */
  killProcesses(): number[];
  /** Synchronous: everything killProcesses does, and the rest of the cleanup at exit; the ids killed. */
  cleanupAtExit(): number[];
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
  awaitGone([...registered].flatMap((hooks) => hooks.cleanupAtExit()));
}

/** Blocks (the process is ending: nothing else is left to run) until `pids` are dead or reaped. */
function awaitGone(pids: number[]): void {
  const deadline = Date.now() + DEATH_WAIT_MS;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  let living = pids.filter(processRunsSync);
  while (living.length > 0 && Date.now() < deadline) {
    Atomics.wait(pause, 0, 0, 10);
    living = living.filter(processRunsSync);
  }
}

/**
 * Kills every VMM at once, then lets the signal do what it would have done. When the program
 * installed its own handler for the signal, that handler decides whether and how to exit.
 */
function onSignal(signal: NodeJS.Signals): void {
  const killed = [...registered].flatMap((hooks) => hooks.killProcesses());
  if (process.listenerCount(signal) > 1) return;
  awaitGone(killed);
  cleanupAll();
  for (const s of SIGNALS) process.off(s, onSignal);
  process.kill(process.pid, signal);
}

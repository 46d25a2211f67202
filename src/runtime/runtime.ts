import { randomBytes } from 'node:crypto';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { registerExitHooks } from '../util/exit-hooks.js';
import { ensureDirSync } from '../util/files.js';
import { runtimeRoot, sharedRuntimeRoot } from '../util/paths.js';
import { ensurePrivateDir, makePrivateDir, PRIVATE_FILE } from '../util/private.js';
import { keepMarker, ownerFile, processStartTicks, type ReapReport, reapStaleRuns } from './reaper.js';

/** Something a run created and must close whatever happens: a machine, a switch, a pool. */
export interface Closable {
  close(): Promise<void>;
}

export interface RuntimeOptions {
  /** Keep state folders (console and VMM logs, disks) after machines close, for inspection. */
  keep?: boolean;
  /** Where run folders go (default $VMKIT_RUN_DIR, else $TMPDIR/vmkit-<uid>). */
  root?: string;
}

/** Where guest RAM files go: shared memory when there is some, so guest RAM never pages to disk. */
export const SHARED_MEMORY_DIR = '/dev/shm';

/**
 * The context every machine lives in: its run folder, the VMM processes it must end, the
 * resources it owns, and caches of host facts. A test, a CLI run or a daemon each holds one and
 * hands it down explicitly; only the public entry points (startMachine, restoreMachine,
 * buildImage, the snapshot store) fall back to defaultRuntime() for a simple script that names
 * none. Closing a runtime ends everything it started.
 */
export class Runtime implements AsyncDisposable {
  keep: boolean;
  readonly root: string;
  private dir?: string;
  private unregister?: () => void;
  private readonly processes = new Map<number, { stateDir: string; exited: Promise<unknown> }>();
  /** Killed, not yet seen to exit: a signal hook may kill before stopProcesses gets to wait. */
  private readonly dying = new Set<Promise<unknown>>();
  private readonly owned = new Set<Closable>();
  private readonly facts = new Map<string, Promise<unknown>>();
  private readonly syncFacts = new Map<string, unknown>();
  private readonly running = new Map<string, Promise<unknown>>();
  private closing?: Promise<void>;

  constructor(options: RuntimeOptions = {}) {
    this.keep = options.keep ?? false;
    this.root = options.root ?? runtimeRoot();
  }

  get runsRoot(): string {
    return join(this.root, 'r');
  }

  /** This runtime's run folder, created (and the leftovers of dead runs reaped) on first use. */
  get runDir(): string {
    if (this.closing) throw new ConfigError('this vmkit runtime is closed');
    if (this.dir) return this.dir;
    try {
      // The default root lies in the shared temp folder: it must be this user's own. A root the
      // caller chose may be a shared folder; r/ inside it is what must be private.
      if (this.root === sharedRuntimeRoot()) ensurePrivateDir(this.root);
      else ensureDirSync(this.root, 0o700);
      ensurePrivateDir(this.runsRoot);
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      throw new ConfigError(
        `cannot make the run folder ${this.runsRoot}${process.env.VMKIT_RUN_DIR ? ' (VMKIT_RUN_DIR)' : ''}: ${(error as NodeJS.ErrnoException).code ?? error}`,
      );
    }
    this.reap();
    const dir = join(this.runsRoot, `${process.pid}-${randomBytes(3).toString('hex')}`);
    makePrivateDir(dir);
    writeFileSync(
      ownerFile(dir),
      JSON.stringify({ pid: process.pid, startTicks: processStartTicks(process.pid) ?? '' }),
      { mode: PRIVATE_FILE },
    );
    if (this.keep) writeFileSync(keepMarker(dir), '', { mode: PRIVATE_FILE });
    this.unregister = registerExitHooks({
      killProcesses: () => this.killProcesses(),
      cleanupAtExit: () => this.cleanupSync(),
    });
    this.dir = dir;
    return dir;
  }

  /** The run's id, as it appears in the names of files it keeps outside its folder. */
  get runId(): string {
    return this.runDir.slice(this.runsRoot.length + 1);
  }

  /** Keep (or stop keeping) the run folder and machine state folders after they close. */
  setKeep(keep: boolean): void {
    this.keep = keep;
    if (!this.dir) return;
    if (keep) writeFileSync(keepMarker(this.dir), '', { mode: PRIVATE_FILE });
    else rmSync(keepMarker(this.dir), { force: true });
  }

  /** Removes what dead runs left: their folders, VMMs and RAM files. */
  reap(): ReapReport {
    return reapStaleRuns(this.runsRoot, {
      except: new Set(this.dir ? [this.dir] : []),
      sharedFiles: existsSync(SHARED_MEMORY_DIR) ? [SHARED_MEMORY_DIR] : [],
    });
  }

  trackProcess(pid: number, stateDir: string, exited: Promise<unknown>): void {
    this.processes.set(pid, { stateDir, exited });
    writeFileSync(join(stateDir, 'vmm.pid'), String(pid), { mode: PRIVATE_FILE });
  }

  untrackProcess(pid: number): void {
    this.processes.delete(pid);
  }

  get trackedProcessCount(): number {
    return this.processes.size;
  }

  /** Registers a resource this runtime closes when it closes; returns it. */
  own<T extends Closable>(resource: T): T {
    this.owned.add(resource);
    return resource;
  }

  disown(resource: Closable): void {
    this.owned.delete(resource);
  }

  /** A host fact worked out once per runtime (the KVM probe, the QEMU version). */
  fact<T>(key: string, find: () => Promise<T>): Promise<T> {
    let known = this.facts.get(key) as Promise<T> | undefined;
    if (!known) {
      known = find();
      this.facts.set(key, known);
      known.catch(() => this.facts.delete(key)); // a failure is not a fact: ask again next time
    }
    return known;
  }

  /** A host fact found synchronously, worked out once per runtime (the jail's tools and namespaces). */
  factSync<T>(key: string, find: () => T): T {
    if (!this.syncFacts.has(key)) this.syncFacts.set(key, find());
    return this.syncFacts.get(key) as T;
  }

  /** Work that callers asking at the same time share (an image build), forgotten once done. */
  shared<T>(key: string, work: () => Promise<T>): Promise<T> {
    let pending = this.running.get(key) as Promise<T> | undefined;
    if (!pending) {
      pending = work().finally(() => this.running.delete(key));
      this.running.set(key, pending);
    }
    return pending;
  }

  /** Kills every VMM this runtime started and waits (at most `timeoutMs`) until they are gone. */
  async stopProcesses(timeoutMs = 5000): Promise<void> {
    this.killProcesses();
    const exits = [...this.dying];
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(exits),
      new Promise((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Closes everything this runtime owns, ends its VMMs and removes its run folder (unless kept). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.owned].map((resource) => resource.close()));
      this.owned.clear();
      await this.stopProcesses();
      this.cleanupSync();
    })();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private killProcesses(): number[] {
    const killed = [...this.processes.keys()];
    for (const [pid, { exited }] of this.processes) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
      this.dying.add(exited);
      const gone = () => this.dying.delete(exited);
      exited.then(gone, gone);
    }
    this.processes.clear();
    return killed;
  }

  private cleanupSync(): number[] {
    const killed = this.killProcesses();
    if (this.dir && !this.keep) rmSync(this.dir, { recursive: true, force: true });
    this.unregister?.();
    this.unregister = undefined;
    return killed;
  }
}

let fallback: Runtime | undefined;

/**
 * The runtime of public calls that name none: one per process, cleaned up at exit. Library code
 * below the public entry points never calls this (test/unit/architecture.test.ts checks).
 */
export function defaultRuntime(): Runtime {
  fallback ??= new Runtime();
  return fallback;
}

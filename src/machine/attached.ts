import { closeSync, constants, type FSWatcher, fstatSync, openSync, readSync, watch } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { AccelDecision } from '../backends/accel.js';
import type { Backend, ExitInfo, Vmm, VmmChannels } from '../backends/backend.js';
import type { AgentAttachment } from '../backends/detached.js';
import { SerialConsole } from '../console/serial.js';
import { OwnedElsewhereError } from '../errors.js';
import type { GuestProfile } from '../guest/profiles/index.js';
import type { Runtime } from '../runtime/runtime.js';
import type { MachineConfig } from './config.js';
import { newStateDir } from './launch.js';
import { Machine } from './machine.js';

/**
 * A Machine over a VMM that something else started and owns (a fleet instance, a project VM):
 * the same execute, waits, copies, systemd calls and errors as any machine, over the guest agent
 * its owner lets it hold. Its console is what the VMM writes to its console log, read as it
 * grows (typing on it is the owner's: `vmkit console`). close() lets go of the agent and leaves
 * the VM running; what would change the VM's life (shutdown, reboot, snapshot, port forwards,
 * links, disks) refuses with OwnedElsewhereError, naming the owner's command instead.
 */
export interface AttachedMachinePlan {
  name: string;
  config: MachineConfig;
  accel: AccelDecision;
  backend: Backend;
  /** The caller's runtime: the machine's own folder (its console copy) is made in its run folder. */
  runtime: Runtime;
  profile: GuestProfile;
  /** The guest agent, held for the machine's life; closed by close(). */
  agent: AgentAttachment;
  /** The VMM's process, and whether it still runs (asked every 250 ms). */
  pid: number;
  isRunning: () => boolean;
  /** The file the VMM writes its serial console to. */
  consoleLog: string;
  /** What owns the VMM, and how to stop or change it instead (MachineOwner.describe). */
  owner: string;
  /** Also let go when the machine closes (a hub's lend, a turn). */
  release?: () => void;
  commandTimeoutMs?: number;
  log?: (line: string) => void;
}

const VMM_WATCH_MS = 250;

export async function attachedMachine(plan: AttachedMachinePlan): Promise<Machine> {
  const { name, runtime } = plan;
  // Its own folder (for the console's copy); a fleet path's slashes are not folders.
  const stateDir = await newStateDir(runtime.runDir, `${name.replace(/[^A-Za-z0-9._-]/g, '_')}.attached`);
  const console = new SerialConsole(`${stateDir}/console.log`);
  const follower = followConsoleLog(plan.consoleLog, console);
  const vmm = new VmmOwnedElsewhere(plan, () => follower.close());
  let detached = false;
  const detach = () => {
    if (detached) return;
    detached = true;
    vmm.stopWatching();
    follower.close();
    plan.agent.close();
    plan.release?.();
  };
  try {
    const machine = new Machine({
      name,
      stateDir,
      accel: plan.accel,
      config: plan.config,
      backend: plan.backend,
      runtime,
      profile: plan.profile,
      vmm,
      agent: plan.agent.channel,
      console,
      commandTimeoutMs: plan.commandTimeoutMs ?? 60_000,
      readyMs: 0,
      memory: { path: '', share: true },
      disks: [],
      attachedDisks: [],
      commandObservers: new Set(),
      takeSnapshot: () => Promise.reject(new OwnedElsewhereError(name, 'snapshot()', plan.owner)),
      nics: [],
      releaseNics: () => {},
      log: plan.log ?? (() => {}),
      bootSetup: { hostname: name, nics: [], hosts: {} },
      bootAgain: () => Promise.reject(new OwnedElsewhereError(name, 'start()', plan.owner)),
      owner: { describe: plan.owner, detach },
    });
    return runtime.own(machine); // closing the runtime lets go of it
  } catch (error) {
    detach();
    console.close();
    await rm(stateDir, { recursive: true, force: true });
    throw error;
  }
}

/** Feeds `console` with what the VMM wrote to its log so far, then with what it writes next. */
function followConsoleLog(path: string, console: SerialConsole): { close(): void } {
  let offset = 0;
  let watcher: FSWatcher | undefined;
  const chunk = Buffer.alloc(64 * 1024);
  const readMore = () => {
    let fd: number | undefined;
    try {
      // The VMM's file (a jailed VMM can write its folder): never read through a link put there.
      fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      const info = fstatSync(fd);
      if (!info.isFile()) return;
      if (info.size < offset) offset = 0; // the owner started the log again
      for (let read = readSync(fd, chunk, 0, chunk.length, offset); read > 0; ) {
        offset += read;
        console.replay(chunk.subarray(0, read));
        read = readSync(fd, chunk, 0, chunk.length, offset);
      }
    } catch {
      // no log (yet): nothing printed
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  };
  readMore();
  try {
    watcher = watch(path, { persistent: false }, readMore);
    watcher.on('error', () => watcher?.close());
  } catch {
    // no log to watch: the console stays as it is
  }
  return { close: () => watcher?.close() };
}

/**
 * The VMM as an attached machine sees it: its process and its end. What would act on it
 * (control, kill) belongs to its owner and refuses.
 */
class VmmOwnedElsewhere implements Vmm {
  readonly backend: Backend;
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  hasExited = false;
  private readonly watcher: NodeJS.Timeout;

  constructor(
    private readonly plan: AttachedMachinePlan,
    onExit: () => void,
  ) {
    this.backend = plan.backend;
    this.pid = plan.pid;
    let exit: (info: ExitInfo) => void = () => {};
    this.exited = new Promise((resolve) => {
      exit = resolve;
    });
    this.watcher = setInterval(() => {
      if (plan.isRunning()) return;
      this.stopWatching();
      this.hasExited = true;
      onExit();
      exit({ code: null, signal: null });
    }, VMM_WATCH_MS);
    this.watcher.unref();
  }

  stopWatching(): void {
    clearInterval(this.watcher);
  }

  get channels(): VmmChannels {
    throw this.refuse('its VMM channels');
  }
  stderrTail(): string {
    return '';
  }
  closeControl(): void {}
  kill(): Promise<ExitInfo> {
    return Promise.reject(this.refuse('kill'));
  }
  pause = () => Promise.reject(this.refuse('pause'));
  resume = () => Promise.reject(this.refuse('resume'));
  status = () => Promise.reject(this.refuse('status'));
  quit = () => Promise.reject(this.refuse('quit'));
  powerDown = () => Promise.reject(this.refuse('powerDown'));
  writeState = () => Promise.reject(this.refuse('saving its state'));
  readState = () => Promise.reject(this.refuse('loading a state'));
  abortWriteState = () => Promise.reject(this.refuse('saving its state'));
  saveState = () => Promise.reject(this.refuse('saving its state'));
  loadState = () => Promise.reject(this.refuse('loading a state'));
  addPortForward = () => Promise.reject(this.refuse('forwardPort()'));
  removePortForward = () => Promise.reject(this.refuse('forwardPort()'));
  setLinkUp = () => Promise.reject(this.refuse('block() and unblock()'));
  get monitor(): never {
    throw this.refuse('its monitor (qmp, sendMonitorCommand, waitForQmpEvent)');
  }
  humanCommand = () => Promise.reject(this.refuse('sendMonitorCommand()'));
  screendump = () => Promise.reject(this.refuse('screenshots'));
  sendKeys = () => Promise.reject(this.refuse('sendKey() and sendChars()'));

  private refuse(call: string): OwnedElsewhereError {
    return new OwnedElsewhereError(this.plan.name, call, this.plan.owner);
  }
}

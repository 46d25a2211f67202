import { rm } from 'node:fs/promises';
import type { RawResult } from '../agent/backdoor.js';
import type { GuestProcess } from '../agent/process.js';
import type { AccelDecision } from '../backends/accel.js';
import { type Backend, type ExitInfo, requireCapability } from '../backends/backend.js';
import type { QmpClient, QmpEvent } from '../backends/qemu/qmp.js';
import type { SerialConsole } from '../console/serial.js';
import { ConsoleShell, type ConsoleShellOptions } from '../console/shell.js';
import { CapabilityError, MachineCrashedError } from '../errors.js';
// Types only: snapshots are taken by the snapshot layer, handed in as `takeSnapshot`.
import type { Snapshot, SnapshotOptions } from '../snapshot/snapshot.js';
import { shellQuote } from '../util/shell.js';
import { sleep, withTimeout } from '../util/time.js';
import { checkCall } from './calls.js';
import {
  type CommandList,
  type CommandObserver,
  type CommandOptions,
  type ExecResult,
  type ExecuteOptions,
  expectStatus,
  observeCommands,
  runCommand,
  type SpawnOptions,
  spawnCommand,
  toText,
  type WaitOptions,
} from './commands.js';
import type { MachineConfig } from './config.js';
import { type CopyFromVmOptions, type CopyReport, copyIn, copyOut } from './copies.js';
import { forwardPort, type PortForward, setLinks } from './host-access.js';
import { type InteractOptions, interactWithConsole, interactWithShell } from './interact.js';
import type { MachineInternals } from './internals.js';
import { describeNics, watchVmm } from './lifecycle.js';
import { type SaveDiskOptions, saveDiskImage } from './media.js';
import { type QmpEventFilter, sendMonitorCommand, waitForQmpEvent } from './monitor.js';
import { nested } from './narration.js';
import { type PortOptions, waitForPort } from './ports.js';
import { retryCommand } from './retry.js';

export type { CommandOptions, ExecResult, WaitOptions } from './commands.js';
export type { CopyFromVmOptions, CopyReport } from './copies.js';
export type { MachineInternals, MachineNic, SnapshotTaker } from './internals.js';

/**
 * A running virtual machine. Commands run as root through the backdoor; every call has a
 * timeout; when the machine dies, pending and later calls fail with MachineCrashedError.
 */
export class Machine implements AsyncDisposable {
  private closed = false;
  private stopping = false;
  private closing?: Promise<void>;

  readonly name: string;
  readonly stateDir: string;
  readonly accel: AccelDecision;
  readonly config: MachineConfig;
  readonly console: SerialConsole;
  /** Milliseconds from the VMM's spawn until the backdoor answered (boot, or restore). */
  readonly readyMs: number;
  /** How long a guest command or wait may take when the call gives no timeout. */
  readonly commandTimeoutMs: number;

  constructor(private readonly internals: MachineInternals) {
    ({
      name: this.name,
      stateDir: this.stateDir,
      accel: this.accel,
      config: this.config,
      console: this.console,
      readyMs: this.readyMs,
      commandTimeoutMs: this.commandTimeoutMs,
    } = internals);
    watchVmm(internals, () => this.stopping);
  }

  /**
   * Pauses the machine, saves its complete state (CPU, devices, RAM, disks) to the snapshot
   * store, and lets it run on. Restore it with restoreMachine() or fork it with snapshot.fork().
   */
  async snapshot(name?: string, options: SnapshotOptions = {}): Promise<Snapshot> {
    checkCall('snapshot', { snapshotOptions: options });
    if (this.closed || this.internals.vmm.hasExited) {
      throw new MachineCrashedError(
        this.name,
        'cannot snapshot a machine that is not running',
        this.console.tail(),
      );
    }
    requireCapability(this.internals.backend, 'snapshot');
    return this.internals.agent.exclusive(() => this.internals.takeSnapshot(this.internals, name, options));
  }

  /** What the machine is made of, for the modules that add methods to it (machine-power.ts). */
  get parts(): MachineInternals {
    return this.internals;
  }

  /**
   * A shell on the serial console, for guests without the backdoor: logs in, becomes root and
   * runs commands with their exit status (stdout and stderr merged). See ConsoleShellOptions.
   */
  consoleShell(options: ConsoleShellOptions = {}): Promise<ConsoleShell> {
    return ConsoleShell.open(this.console, this.name, options);
  }

  /** Without the backdoor: the port on 127.0.0.1 that leads to the guest's SSH port (22). */
  get sshPort(): number | undefined {
    return this.internals.sshPort;
  }

  /** Keeps a disk in the cache: a `{ disk }` machine's boot disk, else `disks[options.disk ?? 0]`. */
  async saveDiskImage(name: string, options: SaveDiskOptions = {}): Promise<{ disk: string }> {
    checkCall('saveDiskImage', { saveOptions: options });
    return saveDiskImage(this.internals, this.stateDir, name, options);
  }

  /** The VMM's process id. */
  get pid(): number {
    return this.internals.vmm.pid;
  }

  /** The backend running this machine ("qemu"). */
  get backend(): Backend {
    return this.internals.backend;
  }

  /** QEMU's monitor, for what the Machine API does not cover. */
  get qmp(): QmpClient {
    const qmp = (this.internals.vmm as Partial<{ qmp: QmpClient }>).qmp;
    if (!qmp) throw new CapabilityError(this.internals.backend.title, 'a QMP monitor');
    return qmp;
  }

  get isRunning(): boolean {
    return !this.internals.vmm.hasExited;
  }

  /**
   * Boots a machine that was shut down (or crashed) again, on the same disks with their contents,
   * and resolves once it is ready. Resolves at once when it is running.
   */
  async start(options: CommandOptions = {}): Promise<void> {
    checkCall('start', { options });
    if (this.closed) throw new MachineCrashedError(this.name, 'machine was closed', this.console.tail());
    if (!this.internals.vmm.hasExited) return;
    await this.internals.bootAgain(options.timeoutMs ?? this.internals.commandTimeoutMs);
    this.stopping = false;
    watchVmm(this.internals, () => this.stopping);
    const setup = this.internals.profile.afterBoot(this.internals.bootSetup);
    if (setup) await this.succeed(setup, { timeoutMs: 30_000 });
  }

  /** Runs `command` with sh as root. Resolves whatever the exit status; rejects on timeout or crash. */
  async execute(command: string, options: ExecuteOptions = {}): Promise<ExecResult> {
    return toText(await this.run('execute', command, options));
  }

  /** Like execute, with stdout and stderr as raw bytes. */
  async executeRaw(command: string, options: ExecuteOptions = {}): Promise<RawResult> {
    return this.run('executeRaw', command, options);
  }

  /** Runs each command in turn, expecting exit status 0; returns their stdout, joined. */
  succeed(...commands: CommandList): Promise<string> {
    return expectStatus('succeed', commands, true, (c, o) => this.run('succeed', c, o));
  }

  /** Runs each command in turn, expecting a non-zero exit status; returns their stdout, joined. */
  fail(...commands: CommandList): Promise<string> {
    return expectStatus('fail', commands, false, (c, o) => this.run('fail', c, o));
  }

  /** Sends `command` and does not wait for it at all (for `reboot`, which never answers). */
  sendCommand(command: string): void {
    checkCall('sendCommand', { command });
    this.internals.agent.detach(command);
  }

  /** Waits on the host while the machine runs on (NixOS: machine.sleep). */
  async sleep(seconds: number): Promise<void> {
    checkCall('sleep', { seconds });
    return sleep(seconds * 1000);
  }

  /**
   * Starts `command` in its own session and returns at once: `stdout`/`stderr` streams, `stdin`,
   * `wait()`, `kill(signal)`. It runs until it exits, is killed, or its `timeoutMs` runs out.
   */
  async spawn(command: string, options: SpawnOptions = {}): Promise<GuestProcess> {
    checkCall('spawn', { command, options });
    return spawnCommand(this.internals, command, options);
  }

  /** Sees every command this machine runs, and its output when the watch asks for it. */
  observeCommands(observer: CommandObserver): () => void {
    return observeCommands(this.internals, observer);
  }

  /** Retries `command` until it exits 0; returns its stdout. */
  async waitUntilSucceeds(command: string, options: WaitOptions = {}): Promise<string> {
    checkCall('waitUntilSucceeds', { command, waitOptions: options });
    return this.retry(`${JSON.stringify(command)} to succeed`, command, (r) => r.exitCode === 0, options);
  }

  /** Retries `command` until it exits non-zero; returns its stdout. */
  async waitUntilFails(command: string, options: WaitOptions = {}): Promise<string> {
    checkCall('waitUntilFails', { command, waitOptions: options });
    return this.retry(`${JSON.stringify(command)} to fail`, command, (r) => r.exitCode !== 0, options);
  }

  async waitForFile(path: string, options: WaitOptions = {}): Promise<void> {
    checkCall('waitForFile', { path, waitOptions: options });
    await this.retry(
      `file ${path} to exist`,
      `test -e ${shellQuote(path)}`,
      (r) => r.exitCode === 0,
      options,
    );
  }

  /**
   * Waits until something in the guest listens on TCP `port` (IPv4 or IPv6, any address; with
   * `address`, only a socket bound to it or to every address).
   */
  async waitForOpenPort(port: number, options: WaitOptions & PortOptions = {}): Promise<void> {
    return waitForPort(this, port, true, options, this.commandTimeoutMs);
  }

  async waitForClosedPort(port: number, options: WaitOptions & PortOptions = {}): Promise<void> {
    return waitForPort(this, port, false, options, this.commandTimeoutMs);
  }

  /** Waits for console output matching `pattern` (a string matches literally) that no earlier wait consumed. */
  async waitForConsoleText(pattern: RegExp | string, options: WaitOptions = {}): Promise<RegExpExecArray> {
    checkCall('waitForConsoleText', { waitOptions: options });
    return this.console.waitForText(pattern, options.timeoutMs ?? this.internals.commandTimeoutMs);
  }

  /** Its switch NICs (eth0, eth1, ...): the switch each plugs into, the MAC and the address in the guest. */
  get networks(): Array<{ index: number; switch?: string; mac: string; address?: string }> {
    return describeNics(this.internals.nics);
  }

  /** Takes all of the machine's switch links down, as if its cables were pulled (NixOS: block). */
  block(): Promise<void> {
    return setLinks(this.internals, false);
  }

  /** Brings its switch links back up (NixOS: unblock). */
  unblock(): Promise<void> {
    return setLinks(this.internals, true);
  }

  /**
   * Makes a guest TCP port reachable from the host at 127.0.0.1:`hostPort` (a free port when none
   * is given). The forward ends with `close()` or with the machine.
   */
  forwardPort(options: { hostPort?: number; guestPort: number }): Promise<PortForward> {
    return forwardPort(this.internals, options);
  }

  /** Everything the serial console printed, escape sequences removed. */
  getConsoleLog(): string {
    return this.console.log;
  }

  /** Types `text` on the serial console. */
  sendConsole(text: string): void {
    checkCall('sendConsole', { text });
    requireCapability(this.internals.backend, 'consoleInput');
    this.console.send(text);
  }

  /**
   * Copies a host file or folder into the guest (any bytes, any size; a folder with its modes);
   * parent folders are created. The bytes are checksummed and land whole or not at all.
   */
  async copyToVm(hostPath: string, guestPath: string, options: CommandOptions = {}): Promise<void> {
    const call = checkCall('copyToVm', { hostPath, guestPath, options });
    const timeoutMs = call.timeoutMs ?? this.internals.commandTimeoutMs * 2;
    await copyIn(this.internals, (c, o) => this.succeed(c, o), hostPath, guestPath, timeoutMs);
  }

  /** Copies a guest file or folder to the host, as untrusted input (see copyOut); returns what was left out. */
  copyFromVm(guestPath: string, hostPath: string, options: CopyFromVmOptions = {}): Promise<CopyReport> {
    const call = checkCall('copyFromVm', { hostPath, guestPath, copyOptions: options });
    const timeoutMs = call.timeoutMs ?? this.internals.commandTimeoutMs * 2;
    const copy = { timeoutMs, keepOwnership: options.keepOwnership };
    return copyOut(this.internals, (c, o) => this.succeed(c, o), guestPath, hostPath, copy);
  }

  /** Runs a human monitor (HMP) command, like `info status`; returns what the monitor printed. */
  async sendMonitorCommand(command: string, options: CommandOptions = {}): Promise<string> {
    const call = checkCall('sendMonitorCommand', { command, options });
    return sendMonitorCommand(this.qmp, command, call.timeoutMs ?? this.internals.commandTimeoutMs);
  }

  /** Waits for the next QMP event the filter accepts (a name, `{ event, data }`, or a predicate). */
  async waitForQmpEvent(filter: QmpEventFilter, options: WaitOptions = {}): Promise<QmpEvent> {
    const call = checkCall('waitForQmpEvent', { waitOptions: options });
    const timeoutMs = call.timeoutMs ?? this.internals.commandTimeoutMs;
    return waitForQmpEvent(this.qmp, this.name, filter, timeoutMs);
  }

  /** Joins this terminal (or `input`/`output`) to a root shell until it exits or input ends. */
  async shellInteract(options: InteractOptions = {}): Promise<void> {
    await interactWithShell(await this.spawn('exec sh 2>&1'), options);
  }

  /** Joins this terminal (or `input`/`output`) to the serial console until input ends. */
  consoleInteract(options: InteractOptions = {}): Promise<void> {
    return interactWithConsole(this.console, (text) => this.sendConsole(text), options);
  }

  /** Writes a line to the machine's log. */
  log(message: string): void {
    this.internals.log(message);
  }

  /** Runs `body` as a named step in the machine's log, with its duration and outcome. */
  nested<T>(message: string, body: () => Promise<T> | T): Promise<T> {
    return nested(this.internals.log, message, body);
  }

  /** Powers off from inside the guest and waits for the VMM to exit. */
  async shutdown(options: CommandOptions = {}): Promise<void> {
    checkCall('shutdown', { options });
    if (this.internals.vmm.hasExited) return;
    this.stopping = true;
    this.internals.agent.fireAndForget('sync; poweroff');
    await this.waitForShutdown({ timeoutMs: options.timeoutMs ?? 60_000 });
  }

  /** Ends the machine at once, like pulling the plug. */
  async crash(): Promise<void> {
    this.stopping = true;
    await this.internals.vmm.quit();
    await this.waitForShutdown({ timeoutMs: 10_000 }).catch(() => this.internals.vmm.kill());
  }

  /** Waits until the VMM has exited (the guest powered off or crashed). */
  async waitForShutdown(options: WaitOptions = {}): Promise<ExitInfo> {
    checkCall('waitForShutdown', { waitOptions: options });
    return withTimeout(
      this.internals.vmm.exited,
      options.timeoutMs ?? this.internals.commandTimeoutMs,
      `machine ${this.name} to shut down`,
      {
        lastState: () => `${this.internals.backend.title} still running`,
        consoleTail: () => this.console.tail(),
      },
    );
  }

  /** Stops the machine (if running) and removes its state. Safe to call more than once. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopping = true;
      await this.internals.vmm.kill();
      this.internals.vmm.closeControl();
      this.internals.releaseNics();
      this.internals.runtime.disown(this);
      this.console.close();
      this.closed = true;
      if (!this.internals.runtime.keep) await rm(this.stateDir, { recursive: true, force: true });
    })();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private async run(method: string, command: string, options: ExecuteOptions): Promise<RawResult> {
    checkCall(method, { command, executeOptions: options });
    if (this.closed) throw new MachineCrashedError(this.name, 'machine was closed', this.console.tail());
    return runCommand(this.internals, method, command, options);
  }

  private retry(
    awaited: string,
    command: string,
    done: (result: ExecResult) => boolean,
    options: WaitOptions,
  ): Promise<string> {
    const timeoutMs = options.timeoutMs ?? this.internals.commandTimeoutMs;
    const run = (attemptMs: number) => this.execute(command, { timeoutMs: attemptMs });
    return retryCommand(run, `${awaited} on ${this.name}`, done, timeoutMs, options.attemptTimeoutMs);
  }
}

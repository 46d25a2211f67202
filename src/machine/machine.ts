import type { RawResult } from '../agent/backdoor.js';
import type { GuestProcess } from '../agent/process.js';
import type { AccelDecision } from '../backends/accel.js';
import { type Backend, type ExitInfo, requireCapability, type VmmMonitor } from '../backends/backend.js';
import type { SerialConsole } from '../console/serial.js';
import { ConsoleShell, type ConsoleShellOptions } from '../console/shell.js';
import { MachineCrashedError } from '../errors.js';
import type { GuestCommands } from '../guest/profiles/commands.js';
import { sleep } from '../util/time.js';
import { attachDisk } from './attach-disk.js';
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
import { MachineDisplay } from './display.js';
import type { ExtraDisk } from './extra-disks.js';
import { forwardPort, type PortForward, setLinks } from './host-access.js';
import { type InteractOptions, interactWithConsole, interactWithShell } from './interact.js';
import type { MachineInternals, SnapshotOptions, TakenSnapshot } from './internals.js';
import { describeNics } from './lifecycle.js';
import { type SaveDiskOptions, saveDiskImage } from './media.js';
import * as monitor from './monitor.js';
import { nested } from './narration.js';
import { type PortOptions, type UnixSocketOptions, waitForOpenUnixSocket, waitForPort } from './ports.js';
import { MachinePower } from './power.js';
import { retryUntil, waitForFile } from './retry.js';
import type { JournalOptions, UserOption, WaitForUnitOptions } from './systemd.js';
import * as systemd from './systemd.js';

export type { CommandOptions, ExecResult, WaitOptions } from './commands.js';
export type { CopyFromVmOptions, CopyReport } from './copies.js';
export type { MachineInternals, MachineNic, SnapshotTaker } from './internals.js';

/**
 * A running virtual machine. Commands run as root through the backdoor; every call has a
 * timeout; when the machine dies, pending and later calls fail with MachineCrashedError.
 */
export class Machine implements AsyncDisposable {
  private readonly power: MachinePower;
  private displayPart?: MachineDisplay;

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
    this.power = new MachinePower(internals, this, this.succeedOne);
  }

  /** Saves the machine's whole state (CPU, devices, RAM, disks) to the snapshot store; it runs on. */
  async snapshot(name?: string, options: SnapshotOptions = {}): Promise<TakenSnapshot> {
    checkCall('snapshot', { snapshotOptions: options });
    return this.power.snapshot(name, options);
  }

  /** What the machine is made of (its VMM, agent, console, profile), for vmkit's own layers. */
  get parts(): MachineInternals {
    return this.internals;
  }

  /** A root shell on the serial console, for guests without the backdoor (see ConsoleShellOptions). */
  async consoleShell(options: ConsoleShellOptions = {}): Promise<ConsoleShell> {
    this.power.refuseAttached('consoleShell()');
    return ConsoleShell.open(this.console, this.name, options);
  }

  /** Without the backdoor: the port on 127.0.0.1 that leads to the guest's SSH port (22). */
  get sshPort(): number | undefined {
    return this.internals.sshPort;
  }

  /** Attaches a disk as extraDisks would at boot, once the guest has it: its device (/dev/vdb). See attach-disk.ts. */
  attachDisk(disk: ExtraDisk, options: CommandOptions = {}): Promise<string> {
    this.power.refuseAttached('attachDisk()');
    return attachDisk(this.internals, (command, o) => this.execute(command, o), disk, options);
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
  /** The VMM's own monitor (QEMU's QMP), for what the Machine API does not cover. */
  get qmp(): VmmMonitor {
    return monitor.monitorOf(this.internals);
  }
  get isRunning(): boolean {
    return !this.internals.vmm.hasExited;
  }
  /** Boots a machine that was shut down (or crashed) again, on the same disks; at once when it runs. */
  async start(options: CommandOptions = {}): Promise<void> {
    checkCall('start', { options });
    return this.power.start(options);
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

  /** Starts `command` in its own session; returns at once with its streams, `wait()` and `kill()`. */
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
    return retryUntil(this, 'waitUntilSucceeds', command, true, options);
  }

  /** Retries `command` until it exits non-zero; returns its stdout. */
  async waitUntilFails(command: string, options: WaitOptions = {}): Promise<string> {
    return retryUntil(this, 'waitUntilFails', command, false, options);
  }

  waitForFile(path: string, options: WaitOptions = {}): Promise<void> {
    return waitForFile(this, path, options);
  }

  /** Waits until something in the guest listens on TCP `port` (any address, or `address` only). */
  async waitForOpenPort(port: number, options: WaitOptions & PortOptions = {}): Promise<void> {
    return waitForPort(this, port, true, options, this.commandTimeoutMs, () => this.guest);
  }

  async waitForClosedPort(port: number, options: WaitOptions & PortOptions = {}): Promise<void> {
    return waitForPort(this, port, false, options, this.commandTimeoutMs, () => this.guest);
  }

  /** Waits for console output matching `pattern` (a string matches literally) that no earlier wait consumed. */
  async waitForConsoleText(pattern: RegExp | string, options: WaitOptions = {}): Promise<RegExpExecArray> {
    const call = checkCall('waitForConsoleText', { waitOptions: options });
    return this.console.waitForText(pattern, call.timeoutMs ?? this.commandTimeoutMs);
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

  /** Makes guest TCP `guestPort` reachable at 127.0.0.1:`hostPort` (or a free port) until close(). */
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
    this.power.refuseAttached('sendConsole()');
    requireCapability(this.internals.backend, 'consoleInput');
    this.console.send(text);
  }

  /** Copies a host file or folder into the guest (see copyIn): checksummed, whole or not at all. */
  copyToVm(hostPath: string, guestPath: string, options: CommandOptions = {}): Promise<void> {
    return copyIn(this.internals, this.succeedOne, hostPath, guestPath, options);
  }

  /** Copies a guest file or folder to the host, as untrusted input (see copyOut); returns what was left out. */
  copyFromVm(guestPath: string, hostPath: string, options: CopyFromVmOptions = {}): Promise<CopyReport> {
    return copyOut(this.internals, this.succeedOne, guestPath, hostPath, options);
  }

  /** Runs a human monitor (HMP) command, like `info status`; returns what the monitor printed. */
  sendMonitorCommand(command: string, options: CommandOptions = {}): Promise<string> {
    return monitor.sendMonitorCommand(this.internals, command, options);
  }

  /** Waits for the next QMP event the filter accepts (a name, `{ event, data }`, or a predicate). */
  waitForQmpEvent(filter: monitor.QmpEventFilter, options: WaitOptions = {}): Promise<monitor.QmpEvent> {
    return monitor.waitForQmpEvent(this.internals, filter, options);
  }

  /** Joins this terminal (or `input`/`output`) to a root shell until it exits or input ends. */
  async shellInteract(options: InteractOptions = {}): Promise<void> {
    await interactWithShell(await this.spawn('exec sh 2>&1'), options);
  }

  /** Joins this terminal (or `input`/`output`) to the serial console until input ends. */
  consoleInteract(options: InteractOptions = {}): Promise<void> {
    return interactWithConsole(this.console, (text) => this.sendConsole(text), options);
  }

  /** Refreshes what the guest took from its identity at boot, where no reboot is needed (refresh-identity.sh). */
  async refreshIdentity(options: CommandOptions = {}): Promise<void> {
    await this.succeed(this.guest.refreshIdentity(), options);
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
    return this.power.shutdown(options);
  }

  /** Ends the machine at once, like pulling the plug. */
  crash(): Promise<void> {
    return this.power.crash();
  }

  /** Waits until the VMM has exited (the guest powered off or crashed). */
  async waitForShutdown(options: WaitOptions = {}): Promise<ExitInfo> {
    checkCall('waitForShutdown', { waitOptions: options });
    return this.power.waitForShutdown(options);
  }

  /** Reboots the guest; resolves once its backdoor is back and vmkit's set-up is applied again. */
  async reboot(options: CommandOptions = {}): Promise<void> {
    checkCall('reboot', { options });
    return this.power.reboot(options);
  }

  /** Waits for the unit's ActiveState (default "active"); fails early when it fails or goes inactive with no job queued. */
  waitForUnit(unit: string, options: WaitForUnitOptions = {}): Promise<void> {
    return systemd.waitForUnit(this, unit, options, this.commandTimeoutMs);
  }
  /** `systemctl show <unit>` as an object. */
  getUnitInfo(unit: string, options?: UserOption): Promise<Record<string, string>> {
    return systemd.getUnitInfo(this, unit, options);
  }
  /** One property of `systemctl show <unit>`. */
  getUnitProperty(unit: string, property: string, options?: UserOption): Promise<string> {
    return systemd.getUnitProperty(this, unit, property, options);
  }
  /** Throws a UnitStateError unless the unit's ActiveState is `state`. */
  requireUnitState(unit: string, state?: string, options?: UserOption): Promise<void> {
    return systemd.requireUnitState(this, unit, state, options);
  }
  /** Runs systemctl (as root, or against `user`'s manager); the result is execute()'s. */
  systemctl(args: string | string[], options?: UserOption): Promise<ExecResult> {
    return systemd.systemctl(this, args, options);
  }
  startJob(unit: string, options?: UserOption): Promise<ExecResult> {
    return systemd.startJob(this, unit, options);
  }
  stopJob(unit: string, options?: UserOption): Promise<ExecResult> {
    return systemd.stopJob(this, unit, options);
  }
  /** The journal as text. */
  journal(options?: JournalOptions): Promise<string> {
    return systemd.journal(this, options);
  }
  /** Waits until a unix socket is listening (stream) or bound (datagram), without connecting. */
  waitForOpenUnixSocket(path: string, options: UnixSocketOptions = {}): Promise<void> {
    return waitForOpenUnixSocket(this, path, options, this.commandTimeoutMs, () => this.guest);
  }

  /** Writes the screen as a PNG file. */
  screenshot(path: string): Promise<void> {
    return this.display().screenshot(path);
  }
  /** Presses a key or a combination, e.g. "ctrl-alt-delete", "alt-f2", "ret". */
  sendKey(key: string): Promise<void> {
    return this.display().sendKey(key);
  }
  /** Types text on the keyboard (US layout; printable ASCII, newline and tab). */
  sendChars(text: string): Promise<void> {
    return this.display().sendChars(text);
  }
  /** The text on virtual terminal `tty` (1-63), read from /dev/vcsa<tty> without OCR. */
  getTtyText(tty: number): Promise<string> {
    return this.display().getTtyText(tty);
  }
  /** Waits until the text on virtual terminal `tty` matches `pattern`; returns the match. */
  waitUntilTtyMatches(tty: number, pattern: RegExp, options?: WaitOptions): Promise<RegExpExecArray> {
    return this.display().waitUntilTtyMatches(tty, pattern, options);
  }
  /** The screen's text by OCR (the host's tesseract). */
  getScreenText(): Promise<string> {
    return this.display().getScreenText();
  }
  /** Waits until OCR of the screen matches `pattern`, backing off between attempts. */
  waitForText(pattern: RegExp, options?: WaitOptions): Promise<RegExpExecArray> {
    return this.display().waitForText(pattern, options);
  }

  /** Stops the machine (if running) and removes its state. Safe to call more than once. */
  close(): Promise<void> {
    return this.power.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // For the parts: one command of succeed(); the display part, made on first use.
  private readonly succeedOne = (command: string, options: CommandOptions = {}) =>
    this.succeed(command, options);

  private display(): MachineDisplay {
    this.displayPart ??= new MachineDisplay(this, () => this.internals.vmm);
    return this.displayPart;
  }

  private get guest(): GuestCommands {
    return this.internals.profile.commands;
  }

  private async run(method: string, command: string, options: ExecuteOptions): Promise<RawResult> {
    checkCall(method, { command, executeOptions: options });
    if (this.power.closed)
      throw new MachineCrashedError(this.name, 'machine was closed', this.console.tail());
    return runCommand(this.internals, method, command, options);
  }
}

import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { BackdoorChannel, RawResult } from '../agent/backdoor.js';
import type { GuestProcess } from '../agent/process.js';
import type { AccelDecision } from '../backends/accel.js';
import { type Backend, type ExitInfo, requireCapability, type Vmm } from '../backends/backend.js';
import type { QmpClient } from '../backends/qemu/qmp.js';
import type { SerialConsole } from '../console/serial.js';
import { CapabilityError, CommandFailedError, MachineCrashedError, TransferError } from '../errors.js';
import type { GuestProfile } from '../guest/profiles/index.js';
import type { VirtualSwitch } from '../network/switch.js';
import type { Runtime } from '../runtime/runtime.js';
// Types only: snapshots are taken by the snapshot layer, handed in as `takeSnapshot`.
import type { Snapshot, SnapshotOptions } from '../snapshot/snapshot.js';
import { ensureDir } from '../util/files.js';
import { shellQuote } from '../util/shell.js';
import { withTimeout } from '../util/time.js';
import { checkCall } from './calls.js';
import {
  type CommandObserver,
  type CommandOptions,
  type ExecResult,
  type ExecuteOptions,
  observeCommands,
  runCommand,
  type SpawnOptions,
  spawnCommand,
  toText,
} from './commands.js';
import type { MachineConfig } from './config.js';
import { forwardPort, type PortForward, setLinks } from './host-access.js';
import { listeningCheck, retryCommand } from './retry.js';

export type { CommandOptions, ExecResult } from './commands.js';

/** Takes a snapshot of a machine; supplied by the snapshot layer when the machine is launched. */
export type SnapshotTaker = (
  machine: MachineInternals,
  name: string | undefined,
  options: SnapshotOptions,
) => Promise<Snapshot>;

/** What a Machine is made of; handed over by launchMachine, used again by snapshots. */
export interface MachineInternals {
  name: string;
  stateDir: string;
  accel: AccelDecision;
  config: MachineConfig;
  backend: Backend;
  runtime: Runtime;
  profile: GuestProfile;
  vmm: Vmm;
  agent: BackdoorChannel;
  console: SerialConsole;
  commandTimeoutMs: number;
  readyMs: number;
  /** The guest RAM file as the VMM opened it (unlinked once the VMM has it mapped). */
  memory: { path: string; share: boolean };
  /** qcow2 files, one per disk. */
  disks: string[];
  takeSnapshot: SnapshotTaker;
  /** Its switch NICs, as the guest has them. */
  nics: MachineNic[];
  /** Gives the machine's MACs back to its switches. */
  releaseNics: () => void;
}

/** A switch NIC of a machine (eth<index> in the guest). */
export interface MachineNic {
  switch?: VirtualSwitch;
  /** The MAC inside the guest. */
  mac: string;
  address?: string;
}

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

  constructor(private readonly internals: MachineInternals) {
    ({
      name: this.name,
      stateDir: this.stateDir,
      accel: this.accel,
      config: this.config,
      console: this.console,
      readyMs: this.readyMs,
    } = internals);
    const { vmm, agent, console, name } = internals;
    vmm.exited.then((info) => {
      const reason = this.stopping
        ? 'machine was shut down'
        : `${internals.backend.title} exited unexpectedly (${describeExit(info)})`;
      const stderr = vmm.stderrTail().trim();
      agent.fail(
        new MachineCrashedError(
          name,
          stderr && !this.stopping ? `${reason}; ${internals.backend.title} said: ${stderr}` : reason,
          console.tail(),
        ),
      );
    });
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

  /** Runs `command` with sh as root. Resolves whatever the exit status; rejects on timeout or crash. */
  async execute(command: string, options: ExecuteOptions = {}): Promise<ExecResult> {
    return toText(await this.run('execute', command, options));
  }

  /** Like execute, with stdout and stderr as raw bytes. */
  async executeRaw(command: string, options: ExecuteOptions = {}): Promise<RawResult> {
    return this.run('executeRaw', command, options);
  }

  /** Runs `command`, expecting exit status 0; returns its stdout. */
  async succeed(command: string, options: ExecuteOptions = {}): Promise<string> {
    const result = toText(await this.run('succeed', command, options));
    if (result.exitCode !== 0)
      throw new CommandFailedError(command, result.exitCode, result.stdout, result.stderr);
    return result.stdout;
  }

  /** Runs `command`, expecting a non-zero exit status; returns its stdout. */
  async fail(command: string, options: ExecuteOptions = {}): Promise<string> {
    const result = toText(await this.run('fail', command, options));
    if (result.exitCode === 0) {
      throw new CommandFailedError(
        command,
        result.exitCode,
        result.stdout,
        result.stderr,
        'a non-zero exit status',
      );
    }
    return result.stdout;
  }

  /**
   * Starts `command` in its own session and returns at once: `stdout`/`stderr` streams, `stdin`,
   * `wait()`, `kill(signal)`. It runs until it exits, is killed, or its `timeoutMs` runs out.
   */
  spawn(command: string, options: SpawnOptions = {}): Promise<GuestProcess> {
    checkCall('spawn', { command, options });
    return spawnCommand(this.internals, command, options);
  }

  /** Sees every command this machine runs, and its output when the watch asks for it. */
  observeCommands(observer: CommandObserver): () => void {
    return observeCommands(this.internals, observer);
  }

  /** Retries `command` until it exits 0; returns its stdout. */
  waitUntilSucceeds(command: string, options: CommandOptions = {}): Promise<string> {
    checkCall('waitUntilSucceeds', { command, options });
    return this.retry(`${JSON.stringify(command)} to succeed`, command, (r) => r.exitCode === 0, options);
  }

  /** Retries `command` until it exits non-zero; returns its stdout. */
  waitUntilFails(command: string, options: CommandOptions = {}): Promise<string> {
    checkCall('waitUntilFails', { command, options });
    return this.retry(`${JSON.stringify(command)} to fail`, command, (r) => r.exitCode !== 0, options);
  }

  async waitForFile(path: string, options: CommandOptions = {}): Promise<void> {
    checkCall('waitForFile', { path, options });
    await this.retry(
      `file ${path} to exist`,
      `test -e ${shellQuote(path)}`,
      (r) => r.exitCode === 0,
      options,
    );
  }

  /** Waits until something in the guest listens on TCP `port` (IPv4 or IPv6, any address). */
  async waitForOpenPort(port: number, options: CommandOptions = {}): Promise<void> {
    checkCall('waitForOpenPort', { port, options });
    await this.retry(
      `TCP port ${port} to be listening`,
      listeningCheck(port),
      (r) => r.exitCode === 0,
      options,
    );
  }

  async waitForClosedPort(port: number, options: CommandOptions = {}): Promise<void> {
    checkCall('waitForClosedPort', { port, options });
    await this.retry(`TCP port ${port} to be closed`, listeningCheck(port), (r) => r.exitCode !== 0, options);
  }

  /** Waits for console output matching `pattern` (a string matches literally) that no earlier wait consumed. */
  async waitForConsoleText(pattern: RegExp | string, options: CommandOptions = {}): Promise<RegExpExecArray> {
    checkCall('waitForConsoleText', { options });
    return this.console.waitForText(pattern, options.timeoutMs ?? this.internals.commandTimeoutMs);
  }

  /** Its switch NICs (eth0, eth1, ...): the switch each plugs into, the MAC and the address in the guest. */
  get networks(): Array<{ index: number; switch?: string; mac: string; address?: string }> {
    return this.internals.nics.map((nic, index) => ({
      index,
      ...(nic.switch ? { switch: nic.switch.name } : {}),
      mac: nic.mac,
      ...(nic.address ? { address: nic.address } : {}),
    }));
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
   * Copies a host file into the guest (any bytes, any size); parent folders are created. The bytes
   * are checksummed and land under `guestPath` whole or not at all.
   */
  async copyToVm(hostPath: string, guestPath: string, options: CommandOptions = {}): Promise<void> {
    const call = checkCall('copyToVm', { hostPath, guestPath, options });
    const timeoutMs = call.timeoutMs ?? this.internals.commandTimeoutMs * 2;
    await this.succeed(`mkdir -p ${shellQuote(dirname(guestPath))}`);
    const result = await this.internals.agent.upload(hostPath, guestPath, timeoutMs);
    if (result.status !== 0) {
      throw new TransferError(
        `copying ${hostPath} to ${this.name}:${guestPath} failed: ${result.stderr.toString().trim()}`,
      );
    }
  }

  /**
   * Copies a guest file to the host; parent folders are created. The bytes are checksummed and
   * land at `hostPath` whole or not at all.
   */
  async copyFromVm(guestPath: string, hostPath: string, options: CommandOptions = {}): Promise<void> {
    const call = checkCall('copyFromVm', { hostPath, guestPath, options });
    const timeoutMs = call.timeoutMs ?? this.internals.commandTimeoutMs * 2;
    await withTimeout(ensureDir(dirname(hostPath)), timeoutMs, `creating ${dirname(hostPath)}`).catch(
      (error: Error) => {
        throw new TransferError(`copying ${this.name}:${guestPath} to ${hostPath} failed: ${error.message}`);
      },
    );
    const result = await this.internals.agent.download(guestPath, hostPath, timeoutMs);
    if (result.status !== 0) {
      throw new TransferError(
        `copying ${this.name}:${guestPath} to ${hostPath} failed: ${result.stderr.toString().trim()}`,
      );
    }
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
  async waitForShutdown(options: CommandOptions = {}): Promise<ExitInfo> {
    checkCall('waitForShutdown', { options });
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
    options: CommandOptions,
  ): Promise<string> {
    return retryCommand(
      (timeoutMs) => this.execute(command, { timeoutMs }),
      `${awaited} on ${this.name}`,
      done,
      options.timeoutMs ?? this.internals.commandTimeoutMs,
    );
  }
}

function describeExit(info: ExitInfo): string {
  return info.signal ? `killed by ${info.signal}` : `status ${info.code}`;
}

import { existsSync } from 'node:fs';
import { CommandFailedError } from '../errors.js';
import type { Machine } from '../machine/machine.js';
import { loadProjectConfig, type ProjectConfig, selectVm, type VmConfig } from './config.js';
import { commandScript } from './exec.js';
import type { HubClient, RunResult } from './hub-client.js';
import type { UpOptions, UpResult } from './lifecycle.js';
import type { ProjectSnapshot } from './snapshots.js';
import { intentPath } from './state.js';
import type { VmStatus } from './status.js';
import type { SyncReport } from './sync.js';
import type { SyncMethod } from './sync-vm.js';
import { type ProjectVm, projectVm, withHub } from './vm-handle.js';
import type { VmMachineOptions } from './vm-machine.js';

export interface OpenProjectVmOptions {
  /** Where the search for `vmkit.config.ts`/`.json` starts (walking up); default the current folder. */
  cwd?: string;
  /** The VM of the config (default: its default VM). */
  vm?: string;
  /** Hears progress lines (image builds, boot, provisioning); default: none. */
  log?: (line: string) => void;
}

export interface ProjectExecOptions {
  /** The guest ends the command after this long (status 124); default 60 s. */
  timeoutMs?: number;
  /** Folder in the guest; default the VM's working folder. */
  cwd?: string;
}

/**
 * A project VM (`vmkit.config.*`, `.vmkit/<vm>/`) from a program: what `vmkit up`, `exec`,
 * `sync`, `snapshot`, `reset`, `status`, `down` and `destroy` do, as methods. Each call opens
 * what it needs and lets it go again, so a handle may live as long as the program and share the
 * VM with the CLI; an operation cut off by a kill (of this program or a CLI) is settled before
 * the next one, as in the CLI.
 */
export class ProjectVmHandle {
  private constructor(
    private readonly pvm: ProjectVm,
    private readonly log: (line: string) => void,
  ) {}

  static async open(options: OpenProjectVmOptions = {}): Promise<ProjectVmHandle> {
    const config = await loadProjectConfig(options.cwd);
    return new ProjectVmHandle(projectVm(config, selectVm(config, options.vm)), options.log ?? (() => {}));
  }

  get name(): string {
    return this.pvm.vm.name;
  }

  /** `.vmkit/<vm>/`: its disks, state and snapshots. */
  get dir(): string {
    return this.pvm.dir;
  }

  get config(): VmConfig {
    return this.pvm.vm;
  }

  get project(): ProjectConfig {
    return this.pvm.project;
  }

  /**
   * Starts the VM in the background (or finds it up) and returns once it is ready. A new VM starts
   * from the boot cache unless `fresh`.
   */
  async up(options: UpOptions = {}): Promise<UpResult> {
    await this.settled();
    return (await import('./lifecycle.js')).up(this.pvm, this.log, options);
  }

  /**
   * The running VM as a Machine: execute, waits, copies, systemd calls, its console. It holds the
   * VM's agent until it closes (the CLI's exec, shell and sync of this VM are refused meanwhile);
   * closing it leaves the VM running. A VM that is down: VmDownError.
   */
  async machine(options: VmMachineOptions = {}): Promise<Machine> {
    await this.settled();
    return (await import('./vm-machine.js')).vmMachine(this.pvm, options);
  }

  /** Stops it cleanly, disks kept; false when it was not running. */
  async down(): Promise<boolean> {
    await this.settled();
    return (await import('./lifecycle.js')).down(this.pvm);
  }

  /** Stops it and removes its disks, snapshots and state. */
  async destroy(): Promise<void> {
    await this.settled();
    await (await import('./lifecycle.js')).destroy(this.pvm);
  }

  async status(): Promise<VmStatus> {
    await this.settled();
    return (await import('./status.js')).vmStatus(this.pvm.project, this.pvm.vm.name);
  }

  /** Runs `argv` as root in the guest (in its working folder); resolves with status and output. */
  exec(argv: string[], options: ProjectExecOptions = {}): Promise<RunResult> {
    const script = commandScript(argv, options.cwd ?? this.pvm.vm.workdir);
    return this.withHub((hub) => hub.run(script, options.timeoutMs));
  }

  /** `exec`, and its stdout; a non-zero exit throws a CommandFailedError with the output. */
  async succeed(argv: string[], options: ProjectExecOptions = {}): Promise<string> {
    const result = await this.exec(argv, options);
    if (result.status !== 0) {
      throw new CommandFailedError(
        argv.join(' '),
        result.status,
        result.stdout.toString(),
        result.stderr.toString(),
      );
    }
    return result.stdout.toString();
  }

  /** Copies the host folders of the VM's `sync` maps into it (changes only, unless `full`). */
  async sync(options: { full?: boolean; method?: SyncMethod } = {}): Promise<SyncReport[]> {
    const { syncVm } = await import('./sync-vm.js');
    const reports: SyncReport[] = [];
    await this.withHub((hub) => syncVm(hub, this.pvm, options, (report) => reports.push(report)));
    return reports;
  }

  /** Saves the running VM (RAM, devices, disks) as snapshot `label`, replacing an older one. */
  async snapshot(label: string): Promise<ProjectSnapshot> {
    await this.settled();
    return (await import('./snapshots.js')).saveSnapshot(this.pvm, label);
  }

  /** Puts the VM back to snapshot `label` (running or not); `clean` is the one `up` took. */
  async restore(label: string): Promise<{ restoreMs: number }> {
    await this.settled();
    return (await import('./snapshots.js')).restoreSnapshot(this.pvm, label);
  }

  /** Puts the VM back to the snapshot `up` saved after provisioning (`vmkit reset`). */
  reset(): Promise<{ restoreMs: number }> {
    return this.restore('clean');
  }

  /** Runs the provision commands again, then saves the clean snapshot afresh. */
  async provision(): Promise<void> {
    await this.settled();
    await (await import('./lifecycle.js')).reprovision(this.pvm, this.log);
  }

  async snapshots(): Promise<ProjectSnapshot[]> {
    return (await import('./snapshots.js')).listProjectSnapshots(this.pvm);
  }

  private settled(): Promise<ProjectVm> {
    return settleInterrupted(this.pvm, this.log);
  }

  private async withHub<T>(work: (hub: HubClient) => Promise<T>): Promise<T> {
    return withHub(await this.settled(), work);
  }
}

/**
 * The VM with an operation of it cut off by a kill settled first (repair is loaded only when an
 * intent was recorded); what every command does before it acts, in the CLI and here.
 */
export async function settleInterrupted(pvm: ProjectVm, log: (line: string) => void): Promise<ProjectVm> {
  if (existsSync(intentPath(pvm.dir))) await (await import('./intent.js')).repairVm(pvm, log);
  return pvm;
}

/** The project VM `vm` (default: the config's default) of the project around `cwd`. */
export const openProjectVm = (options: OpenProjectVmOptions = {}) => ProjectVmHandle.open(options);

import type { BackdoorChannel } from '../agent/backdoor.js';
import type { AccelDecision } from '../backends/accel.js';
import type { Backend, ExtraDisk, Vmm } from '../backends/backend.js';
import type { SerialConsole } from '../console/serial.js';
import type { GuestProfile } from '../guest/profiles/index.js';
import type { BootSetup } from '../guest/profiles/profile.js';
import type { VirtualSwitch } from '../network/switch.js';
import type { Runtime } from '../runtime/runtime.js';
import type { MachineConfig } from './config.js';

// What a Machine is made of: handed over by launchMachine, used by its parts and by snapshots.

export interface SnapshotOptions {
  /** Leave the machine paused instead of letting it run on (it is about to be discarded). */
  stop?: boolean;
  /**
   * For named snapshots: more data that identifies the guest state (e.g. a fingerprint of the
   * setup that produced it). Part of the snapshot's id, so a changed key never reuses an old one.
   */
  key?: unknown;
}

/**
 * A snapshot as machine.snapshot() hands it out. Snapshots are made by the snapshot layer, above
 * this one: it completes this interface with its Snapshot class (declaration merging in
 * snapshot/snapshot.ts), so that the machine layer names nothing of a layer above it.
 */
export interface TakenSnapshot {
  readonly id: string;
  readonly name: string;
  /** Its folder in the snapshot store. */
  readonly dir: string;
}

/** Takes a snapshot of a machine; supplied by the snapshot layer when the machine is launched. */
export type SnapshotTaker = (
  machine: MachineInternals,
  name: string | undefined,
  options: SnapshotOptions,
) => Promise<TakenSnapshot>;

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
  /** Disks attached while the VMM runs (Machine.attachDisk): gone with the VMM. */
  attachedDisks: ExtraDisk[];
  takeSnapshot: SnapshotTaker;
  /** Machines without the backdoor: the host port on 127.0.0.1 forwarded to guest port 22. */
  sshPort?: number;
  /** Its switch NICs, as the guest has them. */
  nics: MachineNic[];
  /** Gives the machine's MACs back to its switches. */
  releaseNics: () => void;
  /** The machine's log (progress lines, machine.log, machine.nested). */
  log: (line: string) => void;
  /** What the guest is told after a cold boot: hostname, NICs (MACs that differ from the device's), hosts. */
  bootSetup: BootSetup;
  /**
   * Set when the VMM belongs to something else (a fleet instance, a project VM: attached.ts):
   * close() lets go of it instead of ending it, and calls that would change its life refuse.
   */
  owner?: MachineOwner;
  /** What observes its commands (Machine.observeCommands: the driver's live log and ledger). */
  commandObservers: Set<CommandObserver>;
  /** Boots the machine again in a new VMM on the same disks, after its VMM exited. */
  bootAgain: (timeoutMs: number) => Promise<void>;
}

/** A switch NIC of a machine (eth<index> in the guest). */
export interface MachineNic {
  switch?: VirtualSwitch;
  /** The MAC inside the guest. */
  mac: string;
  address?: string;
}

/** What owns the VMM of an attached machine, and how its user changes that VMM's life instead. */
export interface MachineOwner {
  /** For errors: "it is fleet instance acme/web/1 (stop it with: vmkit fleet instance stop acme/web/1)". */
  describe: string;
  /** Lets go of the VMM's agent (and whatever was held for it); the VMM runs on. */
  detach(): void;
}

/** How a command ended, for observers. */
export interface CommandOutcome {
  durationMs: number;
  exitCode?: number;
  timedOut?: boolean;
  error?: Error;
  /** What the command wrote (commands run to their end; not spawned ones). */
  stdout?: Buffer;
  stderr?: Buffer;
}

/** Watches one command: its output as it comes (when `output` is given) and its end. */
export interface CommandWatch {
  /** The command waits for this first; a rejection fails the command (polling conditions). */
  before?: Promise<void>;
  output?: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
  ended?: (outcome: CommandOutcome) => void;
}

/** Sees every command a machine runs (the driver's live log and its ledger). */
export type CommandObserver = (command: string, method: string) => CommandWatch | undefined;

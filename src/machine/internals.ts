import type { BackdoorChannel } from '../agent/backdoor.js';
import type { AccelDecision } from '../backends/accel.js';
import type { Backend, Vmm } from '../backends/backend.js';
import type { SerialConsole } from '../console/serial.js';
import type { GuestProfile } from '../guest/profiles/index.js';
import type { BootSetup } from '../guest/profiles/profile.js';
import type { VirtualSwitch } from '../network/switch.js';
import type { Runtime } from '../runtime/runtime.js';
// Types only: snapshots are taken by the snapshot layer, handed in as `takeSnapshot`.
import type { Snapshot, SnapshotOptions } from '../snapshot/snapshot.js';
import type { MachineConfig } from './config.js';

// What a Machine is made of: handed over by launchMachine, used by the modules that add to it.

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

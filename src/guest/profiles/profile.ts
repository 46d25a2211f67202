import type { GuestIdentity } from '../../agent/framing.js';
import type { Readiness } from '../readiness.js';
import type { GuestCommands } from './commands.js';

/** A NIC as the guest sees it: eth<index>. */
export interface GuestNic {
  index: number;
  /** With prefix length, e.g. "10.0.0.2/24". */
  address?: string;
  /** Set when the guest's MAC differs from its device's (a renumbered clone, booted again). */
  mac?: string;
}

/** The NIC to the host (user-mode networking): its address, and a gateway when it may go out. */
export interface HostNicSetup {
  index: number;
  address: string;
  gateway?: string;
  nameserver?: string;
  /** A NIC out (outbound access), with the default route and the resolver. */
  outbound?: { index: number; address: string; gateway: string; nameserver: string };
}

/** What a freshly booted guest is told. */
export interface BootSetup {
  hostname: string;
  nics: GuestNic[];
  hostNic?: HostNicSetup;
  /** /etc/hosts lines, name to address. */
  hosts: Record<string, string>;
  /** A machine ID of its own (32 hex digits) for a new machine; absent: the image's stays. */
  machineId?: string;
}

/** What a guest restored from a snapshot is told. */
export interface RestoreSetup {
  /** Set only when it differs from the snapshot's: every program started costs under emulation. */
  hostname?: string;
  /** The host's clock, in whole seconds since the epoch. */
  clockSeconds: number;
  /** Fresh randomness, hex: clones must not share the random state they were saved with. */
  entropyHex: string;
  /** NICs that get a new identity: a new MAC, and a new address or none. */
  renumber: Array<GuestNic & { mac: string }>;
  hosts: Record<string, string>;
  /** A new machine ID (32 hex digits): a clone is a new machine; absent: the snapshot's stays. */
  machineId?: string;
}

/** A restore's set-up as the agent's identity request and the script that does what it cannot. */
export interface AgentRestore {
  identity: GuestIdentity;
  script: string;
}

/**
 * Everything vmkit does inside one kind of guest OS: how it knows the guest is up, and the shell
 * scripts that set it up after a boot or a restore (run by the guest agent as root). Each guest
 * OS has one; machine/ never asks which OS it talks to.
 */
export interface GuestProfile {
  readonly name: string;
  /** How a booting guest is known to be up. */
  readonly readiness: Readiness;
  afterBoot(setup: BootSetup): string;
  afterRestore(setup: RestoreSetup): string;
  /**
   * Waits until the guest's boot has settled (its service manager reached its goal), so that a
   * booted state saved for the boot cache holds a finished boot; absent: ready means settled.
   */
  settle?(): string;
  /**
   * The same set-up split for the guest agent: what it sets itself without starting a process
   * (clock, hostname, entropy: request T), and a script for the rest, '' when nothing is left.
   * Absent, or undefined for this setup: afterRestore's script does it all.
   */
  restoreByAgent?(setup: RestoreSetup): AgentRestore | undefined;
  /** Everything else vmkit runs in the guest: page cache, power, port probes, hosts lines. */
  readonly commands: GuestCommands;
}

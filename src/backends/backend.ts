import type { Socket } from 'node:net';
import { CapabilityError } from '../errors.js';
// Types only: a simulated backend names the stand-in image its machines get.
import type { BootImage } from '../images/types.js';
import type { Runtime } from '../runtime/runtime.js';

/** An accelerator a VMM runs guests with: hardware (KVM) or software emulation (TCG). */
export type Accel = 'kvm' | 'tcg';

/**
 * What a VMM backend can do. vmkit checks these before it asks, so a missing feature fails at
 * once with a CapabilityError naming the backend and the capability, and tests skip by
 * capability rather than by backend name.
 *
 * How the known VMMs fill it in:
 * - QEMU: agent over a virtio serial port, NICs over stream sockets, snapshots by migration,
 *   copy-on-write forks of a shared RAM file, KVM or TCG, a display, console input.
 * - Firecracker (REST over a unix socket): agent over vsock, TAP NICs, full and diff snapshots
 *   (PUT /snapshot/create, /snapshot/load into a fresh process, memory mapped privately),
 *   KVM only, no display, console input on the process's stdin.
 * - Cloud Hypervisor (REST, /api/v1/vm.*): agent over vsock, TAP NICs, full snapshots
 *   (vm.snapshot / vm.restore), KVM (or MSHV) only, no display, console input on a socket or pty.
 */
export interface BackendCapabilities {
  /** How the guest agent is reached. */
  agentTransport: 'serial-port' | 'vsock';
  /** How NICs reach vmkit's switches: a stream socket per NIC, or a host TAP device. */
  network: 'stream' | 'tap';
  /** Which kinds of snapshot it takes; empty when it takes none. */
  snapshot: Array<'full' | 'diff'>;
  /** Clones can map a snapshot's RAM copy-on-write, sharing what they only read. */
  cowFork: boolean;
  /** Accelerators it runs guests under. */
  accels: Accel[];
  /** A screen to take screenshots of and send keys to. */
  display: boolean;
  /** Typing on the guest's serial console. */
  consoleInput: boolean;
  /** A NIC of user-mode networking to the host: port forwards, named host services, internet. */
  hostNetwork: boolean;
}

export type Capability = keyof BackendCapabilities;

/** A NIC of a machine: plugged into a switch (its socket), or into nothing. */
export interface NicSpec {
  socketPath?: string;
  mac: string;
}

/**
 * The machine's own NIC to the host (user-mode networking, restricted), after its switch NICs:
 * the guest reaches nothing through it but the forwarded ports and named services. `internet`
 * adds one more NIC after it, out through a filtering relay (`backends/outbound/`), MAC `outboundMac`.
 */
export interface HostNicSpec {
  mac: string;
  internet: boolean;
  outboundMac?: string;
  /** Guest address and port that lead to a TCP port on the host's loopback. */
  services: Array<{ guestAddress: string; port: number; hostPort: number }>;
}

/** How a machine without direct kernel boot starts: its firmware and the media it boots from. */
export interface FirmwareBoot {
  firmware: 'bios' | 'uefi';
  /** An ISO image, attached read-only as a CD-ROM. */
  cdrom?: string;
  /** A boot disk (a qcow2 overlay over the user's disk), attached before the blank disks. */
  disk?: string;
  order: Array<'cdrom' | 'disk' | 'network'>;
  /** UEFI: the firmware code (read-only) and this machine's own variable store. */
  uefiCode?: string;
  uefiVars?: string;
}

/** Everything a backend needs to start one VMM process for a machine. */
export interface VmmSpec {
  name: string;
  /** The machine's state folder: sockets, logs, disks. */
  stateDir: string;
  /** Direct kernel boot; without a kernel the machine boots through its firmware (`boot`). */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** Firmware, boot devices and the order to try them in; BIOS with no devices by default. */
  boot?: FirmwareBoot;
  memoryMiB: number;
  cpus: number;
  accel: Accel;
  nics: NicSpec[];
  hostNic?: HostNicSpec;
  /**
   * Guest RAM lives in this file. `share: true` writes guest memory into it (a machine that may
   * be snapshotted); `share: false` maps it copy-on-write (a clone of a snapshot).
   */
  memory: { path: string; share: boolean };
  /** qcow2 images, attached as virtio disks in order (/dev/vda, /dev/vdb, ...). */
  disks: string[];
  /** Start paused, waiting for saved state to be loaded (a restore). */
  incoming?: boolean;
  /** A guest reboot restarts the guest instead of ending the VMM. */
  allowReboot?: boolean;
  /** A screen (VGA) for screenshots and virtual terminals. */
  display?: boolean;
  /**
   * The VMM outlives vmkit's process and is attached to again later (fleet instances): its
   * control, agent and transfer sockets are listened on by the VMM itself, and it writes the
   * console to `console.log` in the state folder.
   */
  detached?: boolean;
  /** Appended to the generated command line, for callers that know the VMM. */
  extraArgs?: string[];
  startTimeoutMs: number;
  /** Tracks the process so that it never outlives the run. */
  runtime: Runtime;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** The byte streams between vmkit and a running guest. */
export interface VmmChannels {
  /** The serial console (ttyS0). */
  console: Socket;
  /** The guest agent's command channel. */
  agent: Socket;
  /** Bulk file bytes for the agent, when the backend has a second channel. */
  transfer?: Socket;
}

export interface SaveStateOptions {
  ramInFile: boolean;
  /** The guest RAM file the VMM was started with (VmmSpec.memory.path). */
  ramPath: string;
  timeoutMs: number;
}

export interface FileDigest {
  digest: string;
  bytes: number;
}

/** One running VMM process, as the machine layer sees it. */
export interface Vmm {
  readonly backend: Backend;
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  readonly hasExited: boolean;
  readonly channels: VmmChannels;
  /** What the VMM printed last, for error messages. */
  stderrTail(): string;
  /** Kills the process at once and waits until it is gone. */
  kill(): Promise<ExitInfo>;
  /** Asks the VMM to end now (no guest shutdown); resolves once asked. */
  quit(): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /**
   * Saves the paused guest into the folder `dir`: `state` (CPU and devices, and guest RAM too
   * unless `ramInFile`) and, with `ramInFile`, guest RAM as the file `ram` (QEMU copies its shared
   * RAM file sparse; Firecracker's /snapshot/create writes its memory file there). Returns the
   * digests of files it digested while writing them, so that they are not read twice.
   */
  saveState(dir: string, options: SaveStateOptions): Promise<Record<string, FileDigest>>;
  /**
   * Loads state saved by saveState (the `state` file at `path`; guest RAM is the memory file the
   * VMM was started with when `ramInFile`) into a VMM started with `incoming`, then resumes it.
   */
  loadState(path: string, options: { ramInFile: boolean; timeoutMs: number }): Promise<void>;
  /** Closes vmkit's side of the VMM's control channel. */
  closeControl(): void;
  /** Takes switch NIC `index` down or up, as a pulled or plugged cable. */
  setLinkUp(index: number, up: boolean): Promise<void>;
  /** Forwards TCP `hostPort` on the host's loopback to `guestPort` through the host NIC. */
  addPortForward(hostPort: number, guestPort: number): Promise<void>;
  removePortForward(hostPort: number): Promise<void>;
  /**
   * Why the VMM ended, when it can say so better than an exit status (the mock: the command its
   * script does not answer): the machine's pending and later calls fail with this error.
   */
  readonly endedWith?: Error;
}

/** A virtual machine monitor vmkit can drive. */
export interface Backend {
  /** As in options and errors: "qemu". */
  readonly name: string;
  /** As people write it: "QEMU". */
  readonly title: string;
  readonly capabilities: BackendCapabilities;
  /** The VMM's version line: saved state is only exchanged between equal versions. */
  version(runtime: Runtime): Promise<string>;
  /** Starts a VMM for `spec`; resolves once every channel is connected. */
  launch(spec: VmmSpec): Promise<Vmm>;
  /**
   * Set by a backend whose guests are simulated (the mock): its machines get this image (nothing
   * is built or checked) and this accelerator (nothing is probed), whatever their options say.
   */
  readonly simulated?: { image: BootImage; accel: Accel };
}

/** Throws a CapabilityError unless `backend` has `capability` (and, for lists, `value` in it). */
export function requireCapability(
  backend: Backend,
  capability: Capability,
  value?: string,
  detail?: string,
): void {
  const declared = backend.capabilities[capability];
  const has = Array.isArray(declared)
    ? value === undefined
      ? declared.length > 0
      : (declared as string[]).includes(value)
    : typeof declared === 'boolean'
      ? declared
      : value === undefined || declared === value;
  if (!has) throw new CapabilityError(backend.title, value ? `${capability} ${value}` : capability, detail);
}

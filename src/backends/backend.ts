import type { Socket } from 'node:net';
import { CapabilityError } from '../errors.js';
// Types only: a simulated backend names the stand-in image its machines get.
import type { BootImage } from '../images/types.js';
import type { Runtime } from '../runtime/runtime.js';
import type { VmmControl, VmmMonitor } from './control.js';
import type { DetachedVmms } from './detached.js';
import type { Accel, ExtraDisk, VmmSpec } from './vmm-spec.js';

export type { VmmControl, VmmEvent, VmmMonitor, WriteStateOptions } from './control.js';
export type {
  Accel,
  ExtraDisk,
  FirmwareBoot,
  HostNicSpec,
  NicSpec,
  OutboundNicSpec,
  ReadOnlyDiskSpec,
  ServiceNicSpec,
  VmmSpec,
} from './vmm-spec.js';

/**
 * What a VMM backend can do. vmkit checks these before it asks, so a missing feature fails at
 * once with a CapabilityError naming the backend and the capability, and tests skip by
 * capability rather than by backend name.
 *
 * How the known VMMs fill it in:
 * - QEMU: agent over a virtio serial port, NICs over stream sockets, snapshots by migration,
 *   copy-on-write forks of a shared RAM file, KVM or TCG, a display, console input, disks
 *   attached to a running guest (blockdev-add and device_add).
 * - Firecracker (REST over a unix socket): agent over vsock, TAP NICs, full and diff snapshots
 *   (PUT /snapshot/create, /snapshot/load into a fresh process, memory mapped privately),
 *   KVM only, no display, console input on the process's stdin, drives only before boot.
 * - Cloud Hypervisor (REST, /api/v1/vm.*): agent over vsock, TAP NICs, full snapshots
 *   (vm.snapshot / vm.restore), KVM (or MSHV) only, no display, console input on a socket or pty,
 *   disks attached to a running guest (vm.add-disk).
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
  /** VMMs that outlive vmkit's process (fleet instances, project VMs), attached to again later. */
  detached: boolean;
  /** Disks attached to a running guest (Machine.attachDisk). */
  diskHotplug: boolean;
}

export type Capability = keyof BackendCapabilities;

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
export interface Vmm extends VmmControl {
  readonly backend: Backend;
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  readonly hasExited: boolean;
  readonly channels: VmmChannels;
  /** What the VMM printed last, for error messages. */
  stderrTail(): string;
  /** Kills the process at once and waits until it is gone. */
  kill(): Promise<ExitInfo>;
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
  /**
   * Why the VMM ended, when it can say so better than an exit status (the mock: the command its
   * script does not answer): the machine's pending and later calls fail with this error.
   */
  readonly endedWith?: Error;
  /** The VMM's own monitor, when it has one (QEMU: QMP). */
  readonly monitor?: VmmMonitor;
  /** A human monitor command (QEMU: HMP, like `info status`) and what the monitor printed. */
  humanCommand?(line: string, timeoutMs: number): Promise<string>;
  /** Calls `listener` at every reset of the guest (a reboot); returns what unsubscribes it. */
  onReset?(listener: () => void): () => void;
  /** What a guest reboot does: reset the guest, or end the VMM (a machine without allowReboot). */
  setRebootAction?(action: 'reset' | 'shutdown'): Promise<void>;
  /**
   * Attaches a disk to the running guest as a virtio disk with `disk.serial` (backends with
   * diskHotplug); resolves once the VMM has added the device: the guest finds it after.
   */
  attachDisk?(disk: ExtraDisk & { id: string }, timeoutMs: number): Promise<void>;
  /** Writes the screen as a PPM image to `path` (backends with a display). */
  screendump?(path: string, timeoutMs: number): Promise<void>;
  /** Presses `keys` together and lets go (QEMU's qcodes: "ctrl", "alt", "f1", "a"). */
  sendKeys?(keys: string[]): Promise<void>;
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
  /** VMMs that outlive vmkit's process, attached to again from their state folder. */
  readonly detached?: DetachedVmms;
  /** The VMM's program, checked before anything is built for it (none for a simulated backend). */
  readonly program?: {
    /** What is run: a name looked up on PATH, or a path. */
    command(): string;
    /** What to tell a user who does not have it, with how to install it. */
    missing(): string;
  };
  /** The VMM's own filter of system calls (VmmSpec.sandbox), where it has one. */
  readonly sandbox?: {
    /** What it is and what it denies, as reports name it. */
    readonly description: string;
    /** Whether this host's VMM program can apply it (found once per runtime). */
    available(runtime: Runtime): Promise<boolean>;
  };
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

/** The backend's detached VMMs; a CapabilityError naming `detached` when it has none. */
export function detachedVmms(backend: Backend, what?: string): DetachedVmms {
  requireCapability(backend, 'detached', undefined, what);
  if (!backend.detached) throw new CapabilityError(backend.title, 'detached', what);
  return backend.detached;
}

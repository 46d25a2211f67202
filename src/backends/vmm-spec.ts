import type { Runtime } from '../runtime/runtime.js';
import type { OutboundNet } from './outbound/launch.js';

/** An accelerator a VMM runs guests with: hardware (KVM) or software emulation (TCG). */
export type Accel = 'kvm' | 'tcg';

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

/**
 * A NIC of user-mode networking that reaches nothing: no address beyond the host, not the host
 * itself, except that, where `endpoint` is set, each TCP connection the guest opens to
 * `endpoint.address:port` runs `command` on the host, its standard input and output the connection
 * (a fleet instance's metadata endpoint).
 */
export interface ServiceNicSpec {
  /** A short name, unique in the machine: the VMM names the NIC's parts after it. */
  id: string;
  mac: string;
  /** The NIC's network, e.g. "169.254.169.0/24", and the host's address in it. */
  subnet: string;
  hostAddress: string;
  endpoint?: {
    address: string;
    port: number;
    /** Run without a shell, one process per connection: program and arguments. */
    command: string[];
  };
}

/** A disk image the guest can read but not write. */
export interface ReadOnlyDiskSpec {
  /** A short name, unique in the machine. */
  id: string;
  path: string;
  format: 'raw' | 'qcow2';
}

/**
 * A NIC out to the network beyond the host but not to the host itself: user-mode networking
 * behind vmkit's filtering relay (`backends/outbound/`), whose sockets are in the state folder.
 * The caller starts the relay for the same `net` before the VMM (a detached VMM's relay is
 * detached too). A machine's own NIC out is `HostNicSpec.internet`; a spec has one or the other.
 */
export interface OutboundNicSpec {
  mac: string;
  net: OutboundNet;
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

/**
 * A disk file attached as it is (no overlay), after the machine's own disks: those keep their
 * names (/dev/vda, ...), and the guest finds this one by its serial
 * (/dev/disk/by-id/virtio-<serial>).
 */
export interface ExtraDisk {
  path: string;
  format: 'raw' | 'qcow2';
  /** The guest cannot write to it (default: it writes to the file in place). */
  readOnly?: boolean;
  /** 1 to 20 of letters, digits, '.', '_' and '-'. */
  serial: string;
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
  /**
   * Devices after those above, in this order as the guest sees them: NICs after the switch NICs
   * and the host NIC, `serviceNics` then `outbound`; disks after `disks`, `readOnlyDisks`.
   */
  serviceNics?: ServiceNicSpec[];
  readOnlyDisks?: ReadOnlyDiskSpec[];
  outbound?: OutboundNicSpec;
  /**
   * Apply the VMM's filter of system calls (`Backend.sandbox`): it may not use obsolete calls or
   * change its scheduling or resource limits, but may still start processes (`endpoint` commands).
   */
  sandbox?: boolean;
  /** Start paused, waiting for saved state to be loaded (a restore). */
  incoming?: boolean;
  /** Start with the guest's CPUs stopped, until `resume()` (to attach to its console first). */
  paused?: boolean;
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
  /** Disk files attached as they are, after `disks`, each found in the guest by its serial. */
  extraDisks?: ExtraDisk[];
  startTimeoutMs: number;
  /** Tracks the process so that it never outlives the run. */
  runtime: Runtime;
}

/** An event the VMM announces on its monitor (QEMU: a QMP event such as RESET or STOP). */
export interface VmmEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/**
 * The VMM's own monitor, in its own protocol (QEMU: QMP), for callers that know the VMM: tests
 * that send raw commands, `machine.qmp`. vmkit's own code asks the Vmm's methods instead.
 */
export interface VmmMonitor {
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  on(event: 'event', listener: (event: VmmEvent) => void): unknown;
  off(event: 'event', listener: (event: VmmEvent) => void): unknown;
}

/** Options of writing a paused guest's state into a file (see VmmControl.writeState). */
export interface WriteStateOptions {
  /** Guest RAM lives in the shared memory file: the state holds devices only. */
  ramShared: boolean;
  timeoutMs: number;
  /** What the save is, for errors ("sleep of acme/web/1"). */
  what: string;
}

/**
 * What vmkit asks of a running VMM, whether it launched it (a Vmm) or attached to one that
 * outlives its processes (an AttachedVmm).
 */
export interface VmmControl {
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** The guest's run state as the VMM names it: "running", "paused", ... */
  status(): Promise<string>;
  /** Asks the VMM to end now (no guest shutdown); resolves once asked. */
  quit(): Promise<void>;
  /** Presses the guest's power button (ACPI): a guest that listens shuts down. */
  powerDown(): Promise<void>;
  /**
   * Writes the paused guest's state (CPU and devices, and RAM unless `ramShared`) into the file
   * `path`; resolves once the VMM says it is complete.
   */
  writeState(path: string, options: WriteStateOptions): Promise<void>;
  /** Loads a state written by writeState into a VMM started with `incoming`, then resumes the guest. */
  readState(path: string, options: { ramShared: boolean; timeoutMs: number }): Promise<void>;
  /** Resumes a guest whose writeState was cut off (the VMM may carry the save on without its caller). */
  abortWriteState(timeoutMs?: number): Promise<void>;
  /** Forwards TCP `hostPort` on the host's loopback to `guestPort` through the host NIC. */
  addPortForward(hostPort: number, guestPort: number): Promise<void>;
  removePortForward(hostPort: number): Promise<void>;
}

import type { Socket } from 'node:net';
import type { BackdoorChannel } from '../agent/backdoor.js';
import type { DetachedRecord } from '../runtime/detached.js';
import type { VmmControl } from './control.js';
import type { VmmSpec } from './vmm-spec.js';

/**
 * VMMs that outlive vmkit's process (fleet instances, project VMs): launched detached, listening
 * on their own sockets in the state folder, and attached to again, call by call, from there.
 */

/**
 * Where vmkit keeps a detached VMM's record and log: its state folder by default; a folder the
 * VMM cannot write where the VMM runs as another uid than vmkit (a fleet's jailed VMMs), since
 * vmkit signals the pid the record names and appends to the log as its own uid.
 */
export interface DetachedFiles {
  record: string;
  log: string;
}

/**
 * Runs the VMM through another program (a jail) that ends by exec'ing it in the same process,
 * or (`forks`) in the one child it forks first: the record then names that child.
 */
export type VmmWrapper = (
  program: string,
  args: string[],
) => { program: string; args: string[]; forks?: boolean };

export interface DetachedLaunchOptions {
  wrap?: VmmWrapper;
  files?: DetachedFiles;
}

export interface AttachOptions {
  timeoutMs?: number;
  /** The record, when it is not in the state folder (see DetachedFiles). */
  recordPath?: string;
  /**
   * Use each of the VMM's sockets in turn with every other vmkit call on this host that asks for
   * turns (a VMM may serve one client per socket): attach waits for the control socket's turn,
   * `agent()` for the agent's.
   */
  turns?: boolean;
}

export interface AgentAttachOptions {
  timeoutMs: number;
  /** How long the first request waits for a restarted backdoor's banner (a first boot: its boot timeout). */
  bannerWaitMs: number;
  consoleTail: () => string;
  /** Wait for this host-wide turn on the agent's sockets first (what the caller is, for waiters). */
  turn?: string;
  /** Asked once the turn is taken, before connecting: throws to give up (the turn is released). */
  connecting?: () => void;
}

/**
 * The banner wait (AgentAttachOptions.bannerWaitMs) for the agent of a guest just restored from
 * a state saved with a host attached to its agent: none. That agent was waiting for a request and
 * reads one at once; a restart banner never comes (waiting for one cost every restore 2.5 s).
 */
export const RESTORED_AGENT_BANNER_WAIT_MS = 0;

/**
 * How long a new attachment waits for the agent's restart banner before its probe: not at all. A
 * host that connects as soon as the last one left (the turn handed over) often finds the backdoor
 * still reading, never having seen that host leave, so no banner comes (waiting 2.5 s for one was
 * the whole cost of a fleet CLI exec). Where the backdoor does restart, the probe sent meanwhile is
 * either dropped or answered, and the banner rejects it either way; it is then sent again
 * (attachAgent), and the restarted backdoor reads it.
 */
export const HANDOVER_BANNER_WAIT_MS = 0;

/** The guest agent of a detached VMM, attached: its channel, and what to close when done. */
export interface AgentAttachment {
  channel: BackdoorChannel;
  close(): void;
}

/** vmkit's side of a detached VMM for the length of one call. */
export interface AttachedVmm extends VmmControl {
  readonly name: string;
  readonly stateDir: string;
  readonly record: DetachedRecord;
  /**
   * Connects to the guest agent and checks that it answers. A first boot: pass the boot timeout
   * as `bannerWaitMs`.
   */
  agent(timeoutMs?: number, bannerWaitMs?: number): Promise<BackdoorChannel>;
  /** Connects to the serial console (one reader at a time); it closes when the VMM exits. */
  serialConsole(timeoutMs?: number): Promise<Socket>;
  /** The last lines the guest printed on its serial console. */
  consoleTail(): string;
  /** Closes the control connection alone (others may need it): the agent and console stay attached. */
  closeControl(): void;
  /** Disconnects; the VMM runs on. */
  detach(): void;
}

/** A backend's detached VMMs. */
export interface DetachedVmms {
  /** Starts a VMM for `spec` detached from this process; resolves with its record once it answers. */
  launch(
    spec: Omit<VmmSpec, 'runtime' | 'detached'>,
    options?: DetachedLaunchOptions,
  ): Promise<DetachedRecord>;
  /** Attaches to the running VMM whose state folder is `stateDir`. */
  attach(name: string, stateDir: string, options?: AttachOptions): Promise<AttachedVmm>;
  /** Attaches to the guest agent alone (shared by the calls of one process, see fleet/vmm/agents.ts). */
  attachAgent(name: string, stateDir: string, options: AgentAttachOptions): Promise<AgentAttachment>;
  /** The key of the host-wide turn on the VMM's agent sockets (see util/turn.ts). */
  agentTurnKey(stateDir: string): string;
  /** Where the record and log are by default: in the state folder. */
  files(stateDir: string): DetachedFiles;
  /** The file the VMM writes its serial console to. */
  consoleLogPath(stateDir: string): string;
  /** The last lines the VMM in `stateDir` printed on its serial console. */
  consoleTail(stateDir: string): string;
  /** The sockets the VMM listens on in its state folder (their paths must fit sun_path). */
  socketPaths(stateDir: string): string[];
  /** The processes of this backend whose command line names `stateDir` as their state folder. */
  processesIn(stateDir: string): DetachedRecord[];
}

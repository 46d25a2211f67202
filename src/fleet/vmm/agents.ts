import type { BackdoorChannel } from '../../agent/backdoor.js';
import { type AgentAttachment, HANDOVER_BANNER_WAIT_MS } from '../../backends/detached.js';
import { VmmStartError } from '../../errors.js';
import { isRunning, readRecord } from '../../runtime/detached.js';
import { vmmFiles } from './records.js';
import { fleetVmms } from './vmms.js';

/** An instance's guest agent as one user of it sees it. */
export interface AgentLease {
  channel: BackdoorChannel;
  consoleTail(): string;
}

interface Entry {
  users: number;
  ready: Promise<AgentAttachment>;
  attached?: AgentAttachment;
}

/**
 * The agents of the instances this process runs commands in: one attachment per instance (its
 * agent sockets, no QMP), shared by every concurrent exec and shell of this process, whose
 * requests the agent channel takes in turn, as a Machine's. Opened on first use (after a
 * host-wide turn on the agent's sockets, so other processes wait rather than fail), closed when
 * its last user is done. Held by a Fleet: a long-lived process (the fleet agent) has one.
 */
export class InstanceAgents {
  private readonly entries = new Map<string, Entry>();

  /**
   * Runs `work` with the agent of the instance in `dir`. `admit` is asked once this process has
   * the turn, before it connects: the instance may have changed while it waited (it is being
   * slept or stopped); it throws to refuse.
   */
  async use<T>(
    dir: string,
    name: string,
    timeoutMs: number,
    admit: () => void,
    work: (lease: AgentLease) => Promise<T>,
  ): Promise<T> {
    const entry = this.entry(dir, name, timeoutMs, admit);
    entry.users++;
    try {
      const attached = await entry.ready;
      return await work({ channel: attached.channel, consoleTail: () => fleetVmms().consoleTail(dir) });
    } finally {
      entry.users--;
      if (entry.users === 0) {
        if (this.entries.get(dir) === entry) this.entries.delete(dir);
        entry.ready.then(
          (attached) => attached.close(),
          () => {},
        );
      }
    }
  }

  /** Closes every attachment (the users still in flight fail: their channel breaks). */
  close(): void {
    for (const entry of this.entries.values())
      entry.ready.then(
        (attached) => attached.close(),
        () => {},
      );
    this.entries.clear();
  }

  private entry(dir: string, name: string, timeoutMs: number, admit: () => void): Entry {
    const current = this.entries.get(dir);
    if (current && current.attached?.channel.brokenReason === undefined) return current;
    // A broken one serves none of its later users: theirs is a new one, once its users are done.
    const entry: Entry = {
      users: 0,
      ready: fleetVmms().attachAgent(name, dir, {
        timeoutMs,
        bannerWaitMs: HANDOVER_BANNER_WAIT_MS,
        consoleTail: () => fleetVmms().consoleTail(dir),
        turn: `commands in ${name}`,
        connecting: () => {
          admit();
          if (!isRunning(readRecord(vmmFiles(dir).record)))
            throw new VmmStartError(`the VMM of ${name} is not running (record in ${dir})`);
        },
      }),
    };
    entry.ready.catch(() => {
      if (this.entries.get(dir) === entry) this.entries.delete(dir);
    });
    this.entries.set(dir, entry);
    entry.ready.then(
      (attached) => {
        entry.attached = attached;
      },
      () => {},
    );
    return entry;
  }
}

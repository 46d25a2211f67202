import type { BackdoorChannel } from '../agent/backdoor.js';
import type { AgentAttachment } from '../backends/detached.js';
import { VmkitError } from '../errors.js';
import { waitWithin } from '../util/time.js';

/** A hub request that came while its VM's agent is lent to a Machine, or a lend it could not make. */
export class AgentLentError extends VmkitError {
  override name = 'AgentLentError';
}

/**
 * The hub's hold on its VM's guest agent. Requests share it; a lend (a Machine attaching, see
 * vm-machine.ts) waits until none is running, lets the agent go for the borrower to connect
 * to, and takes it again when the borrower leaves. Requests meanwhile are refused at once,
 * naming the borrower, rather than left waiting on a Machine that may be open for long.
 */
export class HubAgent {
  private ready: Promise<AgentAttachment>;
  private busy = 0;
  private readonly idle = new Set<() => void>();
  private borrower?: string;

  constructor(
    private readonly vm: string,
    first: AgentAttachment,
    private readonly attach: () => Promise<AgentAttachment>,
  ) {
    this.ready = Promise.resolve(first);
  }

  /** Runs `work` with the agent; it counts as running until `work` settles. */
  async use<T>(work: (channel: BackdoorChannel) => Promise<T>): Promise<T> {
    const end = this.begin();
    try {
      return await work((await this.ready).channel);
    } finally {
      end();
    }
  }

  /** Counts something as running (a started process) until the returned function is called. */
  begin(): () => void {
    if (this.borrower) {
      throw new AgentLentError(
        `the agent of VM ${this.vm} is held by ${this.borrower} until it closes; try again then`,
      );
    }
    this.busy++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.busy--;
      if (this.busy === 0) for (const wake of [...this.idle]) wake();
    };
  }

  /**
   * Lets the agent go to `borrower` once nothing runs (at most `timeoutMs`); returns what takes
   * it back (a new attachment: a restarted backdoor that the borrower left).
   */
  async lend(borrower: string, timeoutMs: number): Promise<() => void> {
    if (this.borrower)
      throw new AgentLentError(`the agent of VM ${this.vm} is already held by ${this.borrower}`);
    if (this.busy > 0) {
      await waitWithin<void>(
        timeoutMs,
        `the commands running in VM ${this.vm} to end (a shell or exec elsewhere), so that its agent can be lent`,
        (resolve) => {
          this.idle.add(resolve);
          return () => this.idle.delete(resolve);
        },
      );
    }
    if (this.borrower)
      throw new AgentLentError(`the agent of VM ${this.vm} is already held by ${this.borrower}`);
    this.borrower = borrower;
    const held = await this.ready.catch(() => undefined);
    held?.close();
    return () => {
      this.ready = this.attach();
      this.ready.catch(() => {}); // the next request reports it
      this.borrower = undefined;
    };
  }

  /** Fails what runs now and later (the VMM ended). */
  fail(error: Error): void {
    this.ready.then((attached) => attached.channel.fail(error)).catch(() => {});
  }

  close(): void {
    this.ready.then((attached) => attached.close()).catch(() => {});
  }
}

/**
 * The power part of a Machine: start again after a shutdown, shut down, crash, wait for the VMM
 * to end, and reboot() in the same VMM process, so that the Machine object, its disks and its
 * sockets stay the same. Machine (machine.ts) holds one and delegates to it.
 */
import { rm } from 'node:fs/promises';
import { type ExitInfo, requireCapability } from '../backends/backend.js';
import { CapabilityError, MachineCrashedError, SnapshotError } from '../errors.js';
import type { Closable } from '../runtime/runtime.js';
import { shellQuote } from '../util/shell.js';
import { waitWithin, withTimeout } from '../util/time.js';
import type { CommandOptions, WaitOptions } from './commands.js';
import type { MachineInternals, SnapshotOptions, TakenSnapshot } from './internals.js';
import { watchVmm } from './lifecycle.js';
import { refuseAttached } from './owner.js';
import { REBOOT_TIMEOUT_MS } from './reboots.js';

export class MachinePower {
  /** Set while the machine is being stopped on purpose: its VMM's exit is then no crash. */
  stopping = false;
  /** close() has run: nothing more runs in the machine. */
  closed = false;
  private closing?: Promise<void>;

  constructor(
    private readonly internals: MachineInternals,
    /** The Machine this is part of (the runtime owns it until it closes). */
    private readonly machine: Closable,
    private readonly succeed: (command: string, options?: CommandOptions) => Promise<string>,
  ) {
    watchVmm(internals, () => this.stopping);
  }

  /** Takes a snapshot through the snapshot layer's taker, with no other command in between. */
  snapshot(name: string | undefined, options: SnapshotOptions): Promise<TakenSnapshot> {
    const { internals } = this;
    this.refuseAttached('snapshot()');
    if (this.closed || internals.vmm.hasExited) {
      throw new MachineCrashedError(
        internals.name,
        'cannot snapshot a machine that is not running',
        internals.console.tail(),
      );
    }
    requireCapability(internals.backend, 'snapshot');
    if (internals.attachedDisks.length > 0) {
      throw new SnapshotError(
        `machine ${internals.name} cannot be snapshotted: disks were attached while it ran (${internals.attachedDisks.map((disk) => disk.serial).join(', ')}), and a restore would not make them; give them as extraDisks when it starts instead`,
      );
    }
    return internals.agent.exclusive(() => internals.takeSnapshot(internals, name, options));
  }

  /** Stops the VMM (if running) and removes the machine's state unless its runtime keeps it. */
  close(): Promise<void> {
    const { internals } = this;
    this.closing ??= (async () => {
      this.stopping = true;
      if (internals.owner) return this.letGo();
      await internals.vmm.kill();
      internals.vmm.closeControl();
      internals.releaseNics();
      internals.runtime.disown(this.machine);
      internals.console.close();
      this.closed = true;
      if (!internals.runtime.keep) await rm(internals.stateDir, { recursive: true, force: true });
    })();
    return this.closing;
  }

  /** Boots the machine again on the same disks once its VMM has exited; at once when it runs. */
  async start(options: CommandOptions): Promise<void> {
    const { internals } = this;
    if (this.closed)
      throw new MachineCrashedError(internals.name, 'machine was closed', internals.console.tail());
    if (!internals.vmm.hasExited) return;
    this.refuseAttached('start()');
    await internals.bootAgain(options.timeoutMs ?? internals.commandTimeoutMs);
    this.stopping = false;
    watchVmm(internals, () => this.stopping);
    const setup = internals.profile.afterBoot(internals.bootSetup);
    if (setup) await this.succeed(setup, { timeoutMs: 30_000 });
  }

  async shutdown(options: CommandOptions): Promise<void> {
    this.refuseAttached('shutdown()');
    if (this.internals.vmm.hasExited) return;
    this.stopping = true;
    this.internals.agent.fireAndForget(this.internals.profile.commands.powerOff());
    await this.waitForShutdown({ timeoutMs: options.timeoutMs ?? 60_000 });
  }

  async crash(): Promise<void> {
    this.refuseAttached('crash()');
    this.stopping = true;
    await this.internals.vmm.quit();
    await this.waitForShutdown({ timeoutMs: 10_000 }).catch(() => this.internals.vmm.kill());
  }

  waitForShutdown(options: WaitOptions): Promise<ExitInfo> {
    const { internals } = this;
    return withTimeout(
      internals.vmm.exited,
      options.timeoutMs ?? internals.commandTimeoutMs,
      `machine ${internals.name} to shut down`,
      {
        lastState: () => `${internals.backend.title} still running`,
        consoleTail: () => internals.console.tail(),
      },
    );
  }

  /**
   * Reboots the guest and returns once its backdoor is back and vmkit's set-up is applied again.
   * Without allowReboot, QEMU runs with -no-reboot: for this one reboot, a reset resets.
   */
  async reboot(options: CommandOptions): Promise<void> {
    this.refuseAttached('reboot()');
    const { agent, config, vmm, name, console, profile, backend } = this.internals;
    if (vmm.hasExited)
      throw new MachineCrashedError(name, 'cannot reboot a machine that is not running', console.tail());
    const timeoutMs = options.timeoutMs ?? REBOOT_TIMEOUT_MS;
    // /etc/hosts may live in RAM (tiny): carried over by hand.
    const hosts = await this.succeed('cat /etc/hosts 2>/dev/null || true');
    const { onReset, setRebootAction } = vmm;
    if (!onReset || !setRebootAction) throw new CapabilityError(backend.title, 'a guest reset it reports');
    const rebootAction = setRebootAction.bind(vmm);
    if (!config.allowReboot) await rebootAction('reset');
    try {
      await agent.exclusive(async () => {
        const reset = waitWithin<void>(timeoutMs, `a reset of ${name}`, (resolve) =>
          onReset.call(vmm, resolve),
        );
        agent.fireAndForget(profile.commands.reboot());
        await reset;
      });
      // The reset made the channel wait for the guest and set it up again (reboots.ts). The
      // guest's reboot may reset more than once: -no-reboot comes back only once it is up.
      await agent.recovered(timeoutMs);
    } finally {
      if (!config.allowReboot && !vmm.hasExited) await rebootAction('shutdown');
    }
    await this.succeed(`printf '%s' ${shellQuote(hosts)} > /etc/hosts`, { timeoutMs: 30_000 });
  }

  /** Throws for a call that would change the life of a VMM that belongs to something else. */
  refuseAttached(call: string): void {
    refuseAttached(this.internals, call);
  }

  /** close() of an attached machine: lets go of the VMM, which runs on, and removes its own files. */
  private async letGo(): Promise<void> {
    const { internals } = this;
    internals.runtime.disown(this.machine); // first: the owner's detach may close the runtime
    internals.owner?.detach();
    internals.console.close();
    this.closed = true;
    if (!internals.runtime.keep) await rm(internals.stateDir, { recursive: true, force: true });
  }
}

/**
 * Power methods added to Machine's prototype (see machine-systemd.ts for why): reboot() in the
 * same VMM process, so the Machine object, its disks and its sockets stay the same.
 */
import { MachineCrashedError } from '../errors.js';
import { shellQuote } from '../util/shell.js';
import { checkCall } from './calls.js';
import { type CommandOptions, Machine } from './machine.js';
import { REBOOT_TIMEOUT_MS } from './reboots.js';

declare module './machine.js' {
  interface Machine {
    /**
     * Reboots the guest and returns once its backdoor is back and vmkit's set-up (hostname,
     * addresses, /etc/hosts as it was) is applied again. Works with or without `allowReboot`.
     */
    reboot(options?: CommandOptions): Promise<void>;
  }
}

const methods: ThisType<Machine> & Partial<Machine> = {
  async reboot(options = {}) {
    checkCall('reboot', { options });
    const { agent, config, vmm } = this.parts;
    if (!this.isRunning)
      throw new MachineCrashedError(
        this.name,
        'cannot reboot a machine that is not running',
        this.console.tail(),
      );
    const timeoutMs = options.timeoutMs ?? REBOOT_TIMEOUT_MS;
    // /etc/hosts may live in RAM (tiny): carried over by hand.
    const hosts = await this.succeed('cat /etc/hosts 2>/dev/null || true');
    const qmp = this.qmp;
    // Without allowReboot, QEMU runs with -no-reboot: for this one reboot, a reset resets.
    if (!config.allowReboot) await qmp.execute('set-action', { reboot: 'reset' });
    try {
      await agent.exclusive(async () => {
        const reset = qmp.waitForEvent('RESET', timeoutMs);
        agent.fireAndForget('reboot');
        await reset;
      });
      // The reset made the channel wait for the guest and set it up again (reboots.ts). The
      // guest's reboot may reset more than once: -no-reboot comes back only once it is up.
      await agent.recovered(timeoutMs);
    } finally {
      if (!config.allowReboot && !vmm.hasExited) await qmp.execute('set-action', { reboot: 'shutdown' });
    }
    await this.succeed(`printf '%s' ${shellQuote(hosts)} > /etc/hosts`, { timeoutMs: 30_000 });
  },
};
Object.assign(Machine.prototype, methods);

import type { Machine } from '../machine/machine.js';

/**
 * Runs one process in a restored guest before it is handed out. The first process a new VMM's
 * guest starts pays for the kernel's fork and exec paths translated afresh under TCG (about
 * 0.1 s here; nothing on KVM): a clone restored ahead of demand (a pool's, a suite's next test's)
 * pays it while it waits, not on its first command. Closes the machine if that fails.
 */
export async function warmUp(machine: Machine): Promise<Machine> {
  try {
    await machine.parts.agent.run('true', 30_000);
    return machine;
  } catch (error) {
    await machine.close();
    throw error;
  }
}

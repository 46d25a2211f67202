import type { AttachedVmm } from '../../backends/detached.js';
import { MachineCrashedError } from '../../errors.js';
import { takeTurn } from '../../util/turn.js';
import { vmmFiles } from './records.js';
import { fleetVmms } from './vmms.js';

/** Talking to a running instance's VMM and guest for lifecycle work: its control, and the agent on request. */

export const BOOT_TIMEOUT_MS = 120_000;

/** Runs `script` as root in the instance's guest over a short-lived attachment. */
export async function runInGuest(
  attached: AttachedVmm,
  script: string,
  what: string,
  bannerWaitMs?: number,
): Promise<void> {
  const agent = await attached.agent(BOOT_TIMEOUT_MS, bannerWaitMs);
  const result = await agent.run(script, 30_000);
  if (result.status !== 0) {
    throw new MachineCrashedError(
      attached.name,
      `${what} failed (status ${result.status}): ${result.stderr.toString().trim()}`,
      attached.consoleTail(),
    );
  }
}

/**
 * Runs `work` with the instance's QMP (and, on request, its agent), each taken in turn with every
 * other vmkit call on this host: QEMU serves one client per socket, so a busy one is waited for.
 */
export async function withVm<T>(
  dir: string,
  name: string,
  work: (vm: AttachedVmm) => Promise<T>,
): Promise<T> {
  const attached = await fleetVmms().attach(name, dir, { recordPath: vmmFiles(dir).record, turns: true });
  try {
    return await work(attached);
  } finally {
    attached.detach();
  }
}

/** How long pausing or sleeping waits for the commands in flight in the instance to end. */
export const DRAIN_TIMEOUT_MS = 30_000;

/**
 * Pauses the guest once no command runs in it (a paused guest answers none): it takes the
 * agent's turn, which every process's commands hold while any run (new ones are refused by then).
 */
export async function pauseVm(dir: string, name: string): Promise<void> {
  await withVm(dir, name, async (vm) => {
    const turn = await takeTurn(
      fleetVmms().agentTurnKey(dir),
      DRAIN_TIMEOUT_MS,
      `the commands in ${name} to end before it pauses`,
      `pause of ${name}`,
    );
    try {
      await vm.pause();
    } finally {
      turn.release();
    }
  });
}

export async function resumeVm(dir: string, name: string): Promise<void> {
  await withVm(dir, name, (vm) => vm.resume());
}

/** What the VMM says about its guest: "running", "paused", ... */
export async function vmStatus(dir: string, name: string): Promise<string> {
  return withVm(dir, name, (vm) => vm.status());
}

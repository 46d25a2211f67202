import { RESTORED_AGENT_BANNER_WAIT_MS } from '../backends/detached.js';
import type { RestoreSetup } from '../guest/profiles/index.js';
import { connectHub, type ProjectVm } from './vm-handle.js';
import { startHub } from './vmm.js';

/**
 * Starts the hub of a project VM just restored (from a snapshot or the boot cache), which tells
 * the guest who it is: the clock, hostname, entropy and machine ID by the agent's identity
 * request, as a restored Machine is told, so that no guest process starts where none is needed.
 */
export async function setUpRestoredVm(pvm: ProjectVm, profile: string, setup: RestoreSetup): Promise<void> {
  await startHub(pvm, RESTORED_AGENT_BANNER_WAIT_MS);
  const hub = await connectHub(pvm);
  try {
    await hub.request({ type: 'restored', profile, setup, timeoutMs: 30_000 });
  } finally {
    hub.close();
  }
}

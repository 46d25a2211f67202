import { detachedVmms } from '../../backends/backend.js';
import type { DetachedVmms } from '../../backends/detached.js';
import { backendNamed } from '../../backends/index.js';

/** The detached VMMs of fleet instances: QEMU's, run under the fleet's jail and cgroups. */
export function fleetVmms(): DetachedVmms {
  return detachedVmms(backendNamed('qemu'), "a fleet's instances");
}

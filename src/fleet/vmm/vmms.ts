import { type Backend, detachedVmms } from '../../backends/backend.js';
import type { DetachedVmms } from '../../backends/detached.js';
import { backendNamed } from '../../backends/index.js';

/** The backend of fleet instances: QEMU. */
export const fleetBackend = (): Backend => backendNamed('qemu');

/** The detached VMMs of fleet instances: QEMU's, run under the fleet's jail and cgroups. */
export function fleetVmms(): DetachedVmms {
  return detachedVmms(fleetBackend(), "a fleet's instances");
}

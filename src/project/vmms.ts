import { detachedVmms } from '../backends/backend.js';
import type { DetachedVmms } from '../backends/detached.js';
import { backendNamed } from '../backends/index.js';

/** The detached VMMs of project VMs: QEMU's (a project VM outlives the CLI call that started it). */
export function projectVmms(): DetachedVmms {
  return detachedVmms(backendNamed('qemu'), 'project VMs');
}

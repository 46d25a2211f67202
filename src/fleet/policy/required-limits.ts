import { RefusedError } from '../state/lifecycle.js';
import type { Pool } from '../state/model.js';
import { describeGroups } from '../vmm/cgroups.js';

/**
 * A pool may demand its instances' resource limits (`requireLimits`): where the cgroups that
 * hold them cannot be made or written (no delegation to the calling user, a read-only cgroup
 * tree, a controller missing), its instances are refused instead of run with a warning. Asked
 * before a start or wake does anything (the node's cgroups as they are now), and again of the
 * VMM's own placement once it runs (it is then ended before the refusal is reported).
 */
export class LimitsRefusedError extends RefusedError {
  override name = 'LimitsRefusedError';
  constructor(
    readonly pool: string,
    /** Each limit that could not be applied, and why. */
    readonly missing: string[],
  ) {
    super(
      `pool ${pool} requires its resource limits (requireLimits), and they cannot all be applied here, so the instance was not run: ${missing.join('; ')}`,
    );
  }
}

/** Throws LimitsRefusedError when the pool requires its limits and some were not applied (`missing`). */
export function refuseWithoutLimits(pool: Pool, missing: string[]): void {
  if (pool.requireLimits && missing.length > 0)
    throw new LimitsRefusedError(`${pool.tenant}/${pool.id}`, missing);
}

/** Before a start or wake: refused when the node cannot give the pool's instances their limits now. */
export function checkRequiredLimits(pool: Pool): void {
  if (pool.requireLimits) refuseWithoutLimits(pool, describeGroups().warnings);
}

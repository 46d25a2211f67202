import type { FleetCore } from '../fleet-core.js';
import { type PoolImage, sameImage } from '../images/image-spec.js';
import { buildPoolImage, imageOf } from '../images/pool-image.js';
import { rebuildPool } from '../images/rebuild.js';
import { audit } from '../state/audit.js';
import { setPoolImage } from './updates.js';

/** Records a change the document made to a tenant or pool in the tenant's audit log. */
export function auditChange(
  fleet: FleetCore,
  tenant: string,
  action: string,
  target: string,
  detail: string,
): void {
  audit(fleet.dir, { tenant, action, target, outcome: 'ok', detail });
}

/**
 * Builds (or finds cached) the image the document names for the pool (a name, or a recipe built
 * through the fleet's builder) and, when it is another image or its content key differs from the
 * pool's revision, rebuilds the pool: a new revision in its build history, its base snapshot
 * invalidated (instances move to the revision at their next start or wake, never while they
 * run). Returns the new revision, or undefined when the pool is current.
 */
export async function ensureRevision(
  fleet: FleetCore,
  tenant: string,
  pool: string,
  image: PoolImage,
  onProgress?: (line: string) => void,
): Promise<{ revision: string; baseInvalidated: boolean } | undefined> {
  const current = fleet.store.pool(tenant, pool);
  const built = await buildPoolImage(image, { runtime: fleet.runtime, builder: fleet.builder, onProgress });
  const sameSpec = sameImage(imageOf(current), image);
  if (built.image.key === current.revision && sameSpec) return undefined;
  if (!sameSpec) setPoolImage(fleet.store, tenant, pool, image);
  const rebuilt = await rebuildPool(fleet, `${tenant}/${pool}`, built);
  return { revision: rebuilt.pool.revision, baseInvalidated: rebuilt.baseInvalidated };
}

import { buildImage } from '../../images/build.js';
import { audit } from '../audit.js';
import type { Fleet } from '../fleet.js';
import { rebuildPool } from '../rebuild.js';
import { setPoolImage } from './updates.js';

/** Records a change the document made to a tenant or pool in the tenant's audit log. */
export function auditChange(
  fleet: Fleet,
  tenant: string,
  action: string,
  target: string,
  detail: string,
): void {
  audit(fleet.dir, { tenant, action, target, outcome: 'ok', detail });
}

/**
 * Builds (or finds cached) the image the document names for the pool and, when it is another
 * image or its content key differs from the pool's revision, rebuilds the pool: a new revision in
 * its build history, its base snapshot invalidated (instances move to the revision at their next
 * start). Returns the new revision, or undefined when the pool is current.
 */
export async function ensureRevision(
  fleet: Fleet,
  tenant: string,
  pool: string,
  image: string,
  onProgress?: (line: string) => void,
): Promise<{ revision: string; baseInvalidated: boolean } | undefined> {
  const current = fleet.store.pool(tenant, pool);
  const built = await buildImage(image, { runtime: fleet.runtime, onProgress });
  if (built.key === current.revision && current.image === image) return undefined;
  if (current.image !== image) setPoolImage(fleet.store, tenant, pool, image);
  const rebuilt = await rebuildPool(fleet, `${tenant}/${pool}`);
  return { revision: rebuilt.pool.revision, baseInvalidated: rebuilt.baseInvalidated };
}

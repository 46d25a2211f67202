import { buildImage } from '../../images/build.js';
import { audit } from '../audit.js';
import type { Fleet } from '../fleet.js';
import { recordRevision } from './updates.js';

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
 * Builds (or finds cached) the pool's image and, when its content key differs from the pool's
 * revision, records the new revision. Returns the new revision, or undefined when it is current.
 */
export async function ensureRevision(
  fleet: Fleet,
  tenant: string,
  pool: string,
  image: string,
  onProgress?: (line: string) => void,
): Promise<{ revision: string; moved: number } | undefined> {
  const current = fleet.store.pool(tenant, pool);
  const built = await buildImage(image, { runtime: fleet.runtime, onProgress });
  if (built.key === current.revision && current.image === image) return undefined;
  const moved = recordRevision(fleet.store, tenant, pool, image, built.key);
  auditChange(
    fleet,
    tenant,
    'pool.rebuild',
    `${tenant}/${pool}`,
    `image ${image} revision ${current.revision} -> ${built.key}; ${moved} stopped instance(s) moved to it`,
  );
  return { revision: built.key, moved };
}

import type { FleetCore } from '../fleet-core.js';
import { baseDir, pruneBases } from '../snapshots/base.js';
import { audit } from '../state/audit.js';
import { parseAddress } from '../state/ids.js';
import type { Pool } from '../state/model.js';
import type { BuiltPoolImage } from './pool-image.js';

export interface Rebuilt {
  pool: Pool;
  previousRevision: string;
  /** Base snapshots removed (revisions); the rest are kept for instances running on them or sleeping as deltas of them. */
  removedBases: string[];
  /** Whether the base of the current revision is gone, so that the next start makes a fresh one. */
  baseInvalidated: boolean;
}

/**
 * Builds the pool's image again (unless `built` is that build already) (a cached build when nothing it is made of changed), records
 * the revision, and invalidates the pool's base snapshot: bases no instance needs are removed,
 * and the next start boots and saves a fresh one. Instances start on the new revision; a
 * sleeping one wakes on the base it is a delta of, which is removed once nothing needs it.
 */
export async function rebuildPool(
  fleet: FleetCore,
  address: string,
  built?: BuiltPoolImage,
): Promise<Rebuilt> {
  const { tenant, pool: id } = parseAddress(address, 2);
  const before = fleet.store.pool(tenant, id);
  const { build } = built ?? (await fleet.buildImageOf(before));
  const pool = fleet.store.setPoolRevision(tenant, id, build);
  const instances = fleet.store.listInstances({ tenant, pool: id });
  // The current revision's base goes too, unless an instance still runs on it or sleeps on it.
  const removedBases = pruneBases(fleet.dir, { ...pool, revision: '' }, instances);
  const current = pool.revision.slice(0, 16);
  const baseInvalidated = !instances.some(
    (i) => i.revision.slice(0, 16) === current && ['Running', 'Warm', 'Sleeping'].includes(i.state),
  );
  audit(fleet.dir, {
    tenant,
    action: 'pool.rebuild',
    target: address,
    outcome: 'ok',
    detail: `revision ${before.revision} -> ${pool.revision} (${build.cached ? 'cached' : `built on the ${build.builder === 'vm' ? 'builder VM' : 'host'}`}); bases removed: ${removedBases.join(' ') || 'none'}${baseInvalidated ? '' : `; ${baseDir(fleet.dir, pool, pool.revision)} kept for its instances`}`,
  });
  return { pool, previousRevision: before.revision, removedBases, baseInvalidated };
}

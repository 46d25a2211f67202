import type Database from 'better-sqlite3';
import type { ImageBuilder } from '../../images/types.js';

/** One entry of a pool's build history: which image revision it got, when, from whom, and how it was built. */
export interface PoolBuild {
  revision: string;
  /** When the pool got this revision. */
  builtAt: string;
  /** The image, as the pool names it (a name, or a recipe's name). */
  image?: string;
  /** Who asked (user and process). */
  actor?: string;
  /** Where the image was built: on the host or in a builder VM. */
  builder?: ImageBuilder;
  buildMs?: number;
  /** When the image itself was built; earlier than builtAt when it came from the cache. */
  imageBuiltAt?: string;
  /** The image was in the store already (built for another pool, or before). */
  cached?: boolean;
}

export type BuildRecord = Omit<PoolBuild, 'builtAt'>;

export function insertBuild(
  db: Database.Database,
  tenant: string,
  pool: string,
  build: BuildRecord,
  at: string,
): void {
  db.prepare(
    `INSERT INTO pool_builds (tenant, pool, revision, built_at, image, actor, builder, build_ms, image_built_at, cached)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ).run(
    tenant,
    pool,
    build.revision,
    at,
    build.image ?? null,
    build.actor ?? null,
    build.builder ?? null,
    build.buildMs ?? null,
    build.imageBuiltAt ?? null,
    build.cached === undefined ? null : Number(build.cached),
  );
}

export function listBuilds(db: Database.Database, tenant: string, pool: string): PoolBuild[] {
  const rows = db
    .prepare('SELECT * FROM pool_builds WHERE tenant = ? AND pool = ? ORDER BY rowid')
    .all(tenant, pool) as Array<Record<string, unknown>>;
  return rows.map((row) => {
    const build: PoolBuild = { revision: String(row.revision), builtAt: String(row.built_at) };
    if (row.image != null) build.image = String(row.image);
    if (row.actor != null) build.actor = String(row.actor);
    if (row.builder != null) build.builder = String(row.builder) as ImageBuilder;
    if (row.build_ms != null) build.buildMs = Number(row.build_ms);
    if (row.image_built_at != null) build.imageBuiltAt = String(row.image_built_at);
    if (row.cached != null) build.cached = Boolean(row.cached);
    return build;
  });
}

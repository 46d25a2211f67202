import { statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ConfigError } from '../../errors.js';
import { ensurePrivateDir } from '../../util/private.js';
import { hashedTenantUid } from '../vmm/jail.js';

/** Where the fleet lives without --fleet-dir: $VMKIT_FLEET_DIR, else $XDG_DATA_HOME/vmkit/fleet. */
export function defaultFleetDir(): string {
  if (process.env.VMKIT_FLEET_DIR) return process.env.VMKIT_FLEET_DIR;
  const data = process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share');
  return join(data, 'vmkit', 'fleet');
}

/** Each entry moves the schema one version on; the database's user_version says how far it is. */
const MIGRATIONS: string[] = [
  `CREATE TABLE tenants (
     id TEXT PRIMARY KEY,
     subnet TEXT NOT NULL,
     gateway TEXT NOT NULL,
     max_vcpus INTEGER NOT NULL,
     max_memory_mib INTEGER NOT NULL,
     max_running INTEGER NOT NULL,
     max_warm INTEGER NOT NULL,
     max_instances INTEGER NOT NULL,
     max_disk_mib INTEGER NOT NULL,
     secrets TEXT NOT NULL DEFAULT '{}',
     created_at TEXT NOT NULL
   );
   CREATE TABLE pools (
     tenant TEXT NOT NULL REFERENCES tenants(id),
     id TEXT NOT NULL,
     image TEXT NOT NULL,
     vcpus INTEGER NOT NULL,
     memory_mib INTEGER NOT NULL,
     data_disk_mib INTEGER NOT NULL,
     desired_running INTEGER NOT NULL,
     desired_warm INTEGER NOT NULL,
     desired_sleeping INTEGER NOT NULL,
     revision TEXT NOT NULL,
     created_at TEXT NOT NULL,
     PRIMARY KEY (tenant, id)
   );
   CREATE TABLE pool_builds (
     tenant TEXT NOT NULL,
     pool TEXT NOT NULL,
     revision TEXT NOT NULL,
     built_at TEXT NOT NULL,
     FOREIGN KEY (tenant, pool) REFERENCES pools(tenant, id) ON DELETE CASCADE
   );
   CREATE TABLE instances (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     tenant TEXT NOT NULL,
     pool TEXT NOT NULL,
     id TEXT NOT NULL,
     state TEXT NOT NULL,
     address TEXT NOT NULL,
     mac TEXT NOT NULL,
     revision TEXT NOT NULL,
     pinned INTEGER NOT NULL DEFAULT 0,
     critical INTEGER NOT NULL DEFAULT 0,
     pid INTEGER,
     pid_ticks TEXT,
     reason TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL,
     started_at TEXT,
     last_active_at TEXT,
     intent TEXT,
     intent_from TEXT,
     intent_pid INTEGER,
     intent_ticks TEXT,
     intent_at TEXT,
     UNIQUE (tenant, pool, id),
     UNIQUE (tenant, address),
     FOREIGN KEY (tenant, pool) REFERENCES pools(tenant, id)
   );`,
  // What could not be applied at the last start or wake (cgroup limits, ...), as a JSON list.
  `ALTER TABLE instances ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]';`,
  // Outbound access through user-mode networking, off unless asked for at tenant creation.
  `ALTER TABLE tenants ADD COLUMN outbound INTEGER NOT NULL DEFAULT 0;`,
  // Recipe pools (the recipe as JSON), and who built each revision, where, and how long it took.
  `ALTER TABLE pools ADD COLUMN recipe TEXT;
   ALTER TABLE pool_builds ADD COLUMN image TEXT;
   ALTER TABLE pool_builds ADD COLUMN actor TEXT;
   ALTER TABLE pool_builds ADD COLUMN builder TEXT;
   ALTER TABLE pool_builds ADD COLUMN build_ms INTEGER;
   ALTER TABLE pool_builds ADD COLUMN image_built_at TEXT;
   ALTER TABLE pool_builds ADD COLUMN cached INTEGER;`,
  // Each tenant's jail uid, recorded and unique (it was a hash, unchecked): tenants made before
  // keep the hash's value, which owns their files.
  `ALTER TABLE tenants ADD COLUMN uid INTEGER;
   UPDATE tenants SET uid = vmkit_hashed_tenant_uid(id);
   CREATE UNIQUE INDEX tenants_uid ON tenants (uid);`,
  // Pools that refuse to run an instance without its resource limits (off: a warning only).
  `ALTER TABLE pools ADD COLUMN require_limits INTEGER NOT NULL DEFAULT 0;`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Opens (creating if needed) the fleet's database in `fleetDir`, in WAL mode so readers never
 * block the writer, with a busy timeout so that concurrent CLI calls wait for each other's
 * transactions instead of failing, and brings its schema up to date.
 */
export function openFleetDatabase(fleetDir: string): Database.Database {
  let db: Database.Database | undefined;
  try {
    if (statSync(fleetDir, { throwIfNoEntry: false })?.isDirectory() === false)
      throw new ConfigError(`fleet folder ${fleetDir}: not a folder`);
    ensurePrivateDir(fleetDir);
    db = new Database(join(fleetDir, 'fleet.sqlite3'), { timeout: 15_000 });
    db.pragma('journal_mode = WAL'); // the first read: a file that is no database fails here
  } catch (error) {
    db?.close();
    if (error instanceof ConfigError) throw error;
    // A file, a folder under /proc or /sys, one without write access, not a database: bad input.
    throw new ConfigError(`fleet folder ${fleetDir}: cannot open it: ${(error as Error).message}`);
  }
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.function('vmkit_hashed_tenant_uid', { deterministic: true }, (id) =>
    hashedTenantUid(fleetDir, String(id)),
  );
  migrate(db);
  return db;
}

function migrate(db: Database.Database): void {
  // IMMEDIATE: two CLIs opening a new fleet at once must not both apply the same migration.
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new ConfigError(
        `the fleet database is at schema version ${version}, newer than this vmkit knows (${SCHEMA_VERSION})`,
      );
    }
    for (const step of MIGRATIONS.slice(version)) db.exec(step);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

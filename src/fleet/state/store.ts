import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import { ConfigError } from '../../errors.js';
import { macAddress } from '../../machine/identity.js';
import { processStartTicks } from '../../runtime/reaper.js';
import { parseInput } from '../../util/validate.js';
import { type BuildRecord, insertBuild, listBuilds, type PoolBuild } from '../images/builds.js';
import { checkCreate, checkPoolFits, checkQuota, usageOf } from '../policy/quota.js';
import { allocateTenantUid } from '../vmm/jail.js';
import { clusterSliceOf } from './cluster-slice.js';
import { openFleetDatabase } from './db.js';
import { validateId } from './ids.js';
import { checkOperation, type InstanceState, type Operation, RefusedError } from './lifecycle.js';
import {
  type Instance,
  type Pool,
  type PoolInput,
  poolInput,
  type Tenant,
  type TenantInput,
  tenantInput,
} from './model.js';
import { instanceFrom, now, type Outcome, poolFrom, type Row, snake, tenantFrom } from './rows.js';
import { nextAddress, overlaps, parseSubnet, parseTenantSubnet } from './subnet.js';

/** Whether the process that recorded an intent still runs (same pid, same start time). */
export function intentAlive(instance: Instance): boolean {
  const intent = instance.intent;
  return intent !== undefined && processStartTicks(intent.pid) === intent.ticks;
}

/**
 * The fleet's state in its SQLite database. Every method that changes a row runs in one
 * IMMEDIATE transaction, so concurrent CLI calls (each with the database's busy timeout) see
 * each other's changes whole.
 */
export class FleetStore {
  readonly db: Database.Database;

  constructor(readonly dir: string) {
    this.db = openFleetDatabase(dir);
  }

  close(): void {
    this.db.close();
  }

  private tx<T>(work: () => T): T {
    return this.db.transaction(work).immediate();
  }

  createTenant(input: TenantInput): Tenant {
    const parsed = parseInput(tenantInput, input, 'tenant');
    const subnet = parseTenantSubnet(parsed.subnet);
    return this.tx(() => {
      if (this.findTenant(parsed.id)) throw new RefusedError(`tenant ${parsed.id} already exists`);
      for (const other of this.listTenants()) {
        if (overlaps(subnet, parseSubnet(other.subnet))) {
          throw new RefusedError(
            `tenant ${parsed.id}: subnet ${subnet.cidr} overlaps tenant ${other.id}'s ${other.subnet}`,
          );
        }
      }
      const taken = this.db.prepare('SELECT uid FROM tenants').pluck().all() as number[];
      const uid = allocateTenantUid(this.dir, taken);
      if (uid === undefined) {
        throw new RefusedError(`tenant ${parsed.id}: the fleet's ${taken.length} tenant uids are all taken`);
      }
      this.db
        .prepare(
          `INSERT INTO tenants (id, subnet, gateway, max_vcpus, max_memory_mib, max_running, max_warm,
             max_instances, max_disk_mib, secrets, outbound, uid, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          parsed.id,
          subnet.cidr,
          subnet.gateway,
          parsed.maxVcpus,
          parsed.maxMemoryMiB,
          parsed.maxRunning,
          parsed.maxWarm,
          parsed.maxInstances,
          parsed.maxDiskMiB,
          JSON.stringify(parsed.secrets),
          Number(parsed.outbound),
          uid,
          now(),
        );
      return this.tenant(parsed.id);
    });
  }

  findTenant(id: string): Tenant | undefined {
    const row = this.db.prepare('SELECT * FROM tenants WHERE id = ?').get(validateId(id, 'tenant id')) as
      | Row
      | undefined;
    return row && tenantFrom(row);
  }

  tenant(id: string): Tenant {
    const found = this.findTenant(id);
    if (!found) throw new ConfigError(`no tenant ${id} in the fleet at ${this.dir}`);
    return found;
  }

  listTenants(): Tenant[] {
    return (this.db.prepare('SELECT * FROM tenants ORDER BY id').all() as Row[]).map(tenantFrom);
  }

  deleteTenant(id: string): void {
    this.tx(() => {
      this.tenant(id);
      const pools = this.listPools(id);
      if (pools.length > 0) throw new RefusedError(`tenant ${id} still has ${pools.length} pool(s)`);
      this.db.prepare('DELETE FROM tenants WHERE id = ?').run(id);
    });
  }

  /** A new pool with its first build (the image's revision) in its history. */
  createPool(input: PoolInput, build: BuildRecord): Pool {
    const parsed = parseInput(poolInput, input, 'pool');
    const recipe = typeof parsed.image === 'object' ? parsed.image : undefined;
    return this.tx(() => {
      checkPoolFits(this.tenant(parsed.tenant).quotas, parsed, `pool ${parsed.tenant}/${parsed.id}`);
      if (this.findPool(parsed.tenant, parsed.id)) {
        throw new RefusedError(`pool ${parsed.tenant}/${parsed.id} already exists`);
      }
      const at = now();
      this.db
        .prepare(
          `INSERT INTO pools (tenant, id, image, recipe, vcpus, memory_mib, data_disk_mib, desired_running,
             desired_warm, desired_sleeping, require_limits, revision, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          parsed.tenant,
          parsed.id,
          recipe ? recipe.name : parsed.image,
          recipe ? JSON.stringify(recipe) : null,
          parsed.vcpus,
          parsed.memoryMiB,
          parsed.dataDiskMiB,
          parsed.running,
          parsed.warm,
          parsed.sleeping,
          parsed.requireLimits ? 1 : 0,
          build.revision,
          at,
        );
      insertBuild(this.db, parsed.tenant, parsed.id, build, at);
      return this.pool(parsed.tenant, parsed.id);
    });
  }

  findPool(tenant: string, id: string): Pool | undefined {
    const row = this.db.prepare('SELECT * FROM pools WHERE tenant = ? AND id = ?').get(tenant, id) as
      | Row
      | undefined;
    return row && poolFrom(row);
  }

  pool(tenant: string, id: string): Pool {
    const found = this.findPool(tenant, id);
    if (!found) throw new ConfigError(`no pool ${tenant}/${id} in the fleet at ${this.dir}`);
    return found;
  }

  listPools(tenant?: string): Pool[] {
    const rows = tenant
      ? this.db.prepare('SELECT * FROM pools WHERE tenant = ? ORDER BY id').all(tenant)
      : this.db.prepare('SELECT * FROM pools ORDER BY tenant, id').all();
    return (rows as Row[]).map(poolFrom);
  }

  /** A new build of the pool's image: its revision, recorded in the build history. */
  setPoolRevision(tenant: string, pool: string, build: BuildRecord): Pool {
    return this.tx(() => {
      this.pool(tenant, pool);
      this.db
        .prepare('UPDATE pools SET revision = ? WHERE tenant = ? AND id = ?')
        .run(build.revision, tenant, pool);
      insertBuild(this.db, tenant, pool, build, now());
      return this.pool(tenant, pool);
    });
  }

  poolBuilds(tenant: string, pool: string): PoolBuild[] {
    return listBuilds(this.db, tenant, pool);
  }

  setDesired(tenant: string, pool: string, desired: Pool['desired']): Pool {
    return this.tx(() => {
      this.pool(tenant, pool);
      this.db
        .prepare(
          'UPDATE pools SET desired_running = ?, desired_warm = ?, desired_sleeping = ? WHERE tenant = ? AND id = ?',
        )
        .run(desired.running, desired.warm, desired.sleeping, tenant, pool);
      return this.pool(tenant, pool);
    });
  }

  deletePool(tenant: string, id: string): void {
    this.tx(() => {
      this.pool(tenant, id);
      const count = this.listInstances({ tenant, pool: id }).length;
      if (count > 0) throw new RefusedError(`pool ${tenant}/${id} still has ${count} instance(s)`);
      this.db.prepare('DELETE FROM pools WHERE tenant = ? AND id = ?').run(tenant, id);
    });
  }

  /**
   * Records a new instance (state Created, with a `create` intent held by this process), its
   * address the first free one of the tenant's subnet and its MAC derived from its path.
   */
  createInstance(tenant: string, pool: string, id?: string): Instance {
    return this.tx(() => {
      const owner = this.tenant(tenant);
      const spec = this.pool(tenant, pool);
      const siblings = this.listInstances({ tenant });
      const what = `instance create ${tenant}/${pool}`;
      const diskMiB = siblings.reduce((sum, i) => sum + (this.findPool(tenant, i.pool)?.dataDiskMiB ?? 0), 0);
      checkCreate(owner, spec, siblings.filter((i) => i.pool === pool).length, diskMiB, what);
      const name = id === undefined ? randomBytes(3).toString('hex') : validateId(id, 'instance id');
      if (siblings.some((i) => i.pool === pool && i.id === name)) {
        throw new RefusedError(`instance ${tenant}/${pool}/${name} already exists`);
      }
      const used = new Set(siblings.map((i) => i.address));
      const address = nextAddress(parseSubnet(owner.subnet), used, clusterSliceOf(this.dir));
      if (!address)
        throw new RefusedError(`${what}: tenant ${tenant}'s subnet ${owner.subnet} has no free address`);
      const at = now();
      const ticks = processStartTicks(process.pid) ?? '';
      const result = this.db
        .prepare(
          `INSERT INTO instances (tenant, pool, id, state, address, mac, revision, created_at, updated_at,
             intent, intent_from, intent_pid, intent_ticks, intent_at)
           VALUES (?, ?, ?, 'Created', ?, ?, ?, ?, ?, 'create', 'Created', ?, ?, ?)`,
        )
        .run(
          tenant,
          pool,
          name,
          address,
          macAddress(`fleet/${tenant}/${pool}/${name}`, 0),
          spec.revision,
          at,
          at,
          process.pid,
          ticks,
          at,
        );
      return this.instanceBySeq(Number(result.lastInsertRowid));
    });
  }

  instanceBySeq(seq: number): Instance {
    const row = this.db.prepare('SELECT * FROM instances WHERE seq = ?').get(seq) as Row | undefined;
    if (!row) throw new ConfigError(`instance #${seq} is no longer in the fleet`);
    return instanceFrom(row);
  }

  instance(tenant: string, pool: string, id: string): Instance {
    const row = this.db
      .prepare('SELECT * FROM instances WHERE tenant = ? AND pool = ? AND id = ?')
      .get(tenant, pool, id) as Row | undefined;
    if (!row) throw new ConfigError(`no instance ${tenant}/${pool}/${id} in the fleet at ${this.dir}`);
    return instanceFrom(row);
  }

  listInstances(filter: { tenant?: string; pool?: string } = {}): Instance[] {
    const rows = this.db
      .prepare(
        `SELECT * FROM instances WHERE (@tenant IS NULL OR tenant = @tenant) AND (@pool IS NULL OR pool = @pool)
         ORDER BY tenant, pool, seq`,
      )
      .all({ tenant: filter.tenant ?? null, pool: filter.pool ?? null }) as Row[];
    return rows.map(instanceFrom);
  }

  /**
   * Checks that `operation` may run (transition table, quota, no other live operation on the
   * instance) and records it as the instance's intent, all in one transaction. Returns the
   * instance as it was and the state the operation leads to.
   */
  begin(seq: number, operation: Operation): { instance: Instance; to: InstanceState } {
    return this.tx(() => {
      const instance = this.instanceBySeq(seq);
      const what = `instance ${instance.path}`;
      if (instance.intent && intentAlive(instance)) {
        throw new RefusedError(
          `${what}: busy: ${instance.intent.operation} by pid ${instance.intent.pid} since ${instance.intent.at}`,
        );
      }
      if (instance.intent)
        throw new RefusedError(`${what}: an interrupted ${instance.intent.operation} needs repair first`);
      const to = checkOperation(operation, instance.state, what);
      const holders = this.listInstances({ tenant: instance.tenant })
        .filter((other) => other.seq !== seq)
        .map((other) => {
          const pool = this.pool(other.tenant, other.pool);
          // An operation in flight counts as the state it leads to: two starts cannot both pass.
          const state = other.intent && intentAlive(other) ? this.target(other) : other.state;
          return { state, vcpus: pool.vcpus, memoryMiB: pool.memoryMiB };
        });
      checkQuota(
        this.tenant(instance.tenant),
        usageOf(holders),
        this.pool(instance.tenant, instance.pool),
        operation,
        what,
      );
      this.db
        .prepare(
          `UPDATE instances SET intent = ?, intent_from = ?, intent_pid = ?, intent_ticks = ?, intent_at = ?
           WHERE seq = ?`,
        )
        .run(operation, instance.state, process.pid, processStartTicks(process.pid) ?? '', now(), seq);
      return { instance, to };
    });
  }

  /**
   * Takes over an instance for repair when no live process holds it: its intent (or `check`
   * when it had none) now names this process, so two repairing CLIs never act on it at once.
   * Returns the instance as it was, or undefined when it needs nothing or another process has it.
   */
  claimForRepair(seq: number, needed: (instance: Instance) => boolean): Instance | undefined {
    return this.tx(() => {
      const instance = this.instanceBySeq(seq);
      if (instance.intent && intentAlive(instance)) return undefined;
      if (!needed(instance)) return undefined;
      this.db
        .prepare(
          `UPDATE instances SET intent = ?, intent_from = ?, intent_pid = ?, intent_ticks = ?, intent_at = ?
           WHERE seq = ?`,
        )
        .run(
          instance.intent?.operation ?? 'check',
          instance.intent?.from ?? instance.state,
          process.pid,
          processStartTicks(process.pid) ?? '',
          now(),
          seq,
        );
      return instance;
    });
  }

  private target(instance: Instance): InstanceState {
    const operation = instance.intent?.operation as Operation | 'create';
    if (operation === 'create') return 'Created';
    return (
      (
        { start: 'Running', wake: 'Running', resume: 'Running', warm: 'Warm' } as Record<
          string,
          InstanceState
        >
      )[operation] ?? instance.state
    );
  }

  /** Ends the instance's operation: the new state and outcome written, the intent cleared. */
  finish(seq: number, state: InstanceState, outcome: Outcome = {}): Instance {
    return this.tx(() => {
      const at = now();
      const fields: Record<string, unknown> = { state, updated_at: at, ...snake(outcome) };
      if (state === 'Running') fields.last_active_at = at;
      const sets = Object.keys(fields).map((key) => `${key} = @${key}`);
      this.db
        .prepare(
          `UPDATE instances SET ${sets.join(', ')}, intent = NULL, intent_from = NULL, intent_pid = NULL,
             intent_ticks = NULL, intent_at = NULL WHERE seq = @seq`,
        )
        .run({ ...fields, seq });
      return this.instanceBySeq(seq);
    });
  }

  setFlags(seq: number, flags: { pinned?: boolean; critical?: boolean }): Instance {
    return this.tx(() => {
      const current = this.instanceBySeq(seq);
      this.db
        .prepare('UPDATE instances SET pinned = ?, critical = ? WHERE seq = ?')
        .run(Number(flags.pinned ?? current.pinned), Number(flags.critical ?? current.critical), seq);
      return this.instanceBySeq(seq);
    });
  }

  /** Records activity (a command): the sleep policy's idle time starts again. */
  touch(seq: number): void {
    this.db.prepare('UPDATE instances SET last_active_at = ? WHERE seq = ?').run(now(), seq);
  }

  deleteInstance(seq: number): void {
    this.tx(() => {
      this.db.prepare('DELETE FROM instances WHERE seq = ?').run(seq);
    });
  }
}

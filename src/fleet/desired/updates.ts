import type { PoolImage } from '../images/image-spec.js';
import type { Pool, Tenant } from '../state/model.js';
import type { FleetStore } from '../state/store.js';

/**
 * The changes reconcile makes to existing tenant and pool records, each one IMMEDIATE
 * transaction on the fleet's database (the store has create and delete; these are the updates).
 */

export function updateTenant(
  store: FleetStore,
  id: string,
  change: { quotas: Tenant['quotas']; secrets: Record<string, string> },
): void {
  const q = change.quotas;
  store.db
    .transaction(() => {
      store.tenant(id);
      store.db
        .prepare(
          `UPDATE tenants SET max_vcpus = ?, max_memory_mib = ?, max_running = ?, max_warm = ?,
             max_instances = ?, max_disk_mib = ?, secrets = ? WHERE id = ?`,
        )
        .run(
          q.maxVcpus,
          q.maxMemoryMiB,
          q.maxRunning,
          q.maxWarm,
          q.maxInstances,
          q.maxDiskMiB,
          JSON.stringify(change.secrets),
          id,
        );
    })
    .immediate();
}

export type PoolSettings = Pick<Pool, 'vcpus' | 'memoryMiB' | 'dataDiskMiB' | 'desired' | 'requireLimits'>;

export function updatePool(store: FleetStore, tenant: string, id: string, settings: PoolSettings): void {
  store.db
    .transaction(() => {
      store.pool(tenant, id);
      store.db
        .prepare(
          `UPDATE pools SET vcpus = ?, memory_mib = ?, data_disk_mib = ?, desired_running = ?,
             desired_warm = ?, desired_sleeping = ?, require_limits = ? WHERE tenant = ? AND id = ?`,
        )
        .run(
          settings.vcpus,
          settings.memoryMiB,
          settings.dataDiskMiB,
          settings.desired.running,
          settings.desired.warm,
          settings.desired.sleeping,
          settings.requireLimits ? 1 : 0,
          tenant,
          id,
        );
    })
    .immediate();
}

/** Names another image or recipe for the pool; `rebuildPool` then records its revision and invalidates the base. */
export function setPoolImage(store: FleetStore, tenant: string, id: string, image: PoolImage): void {
  const [name, recipe] = typeof image === 'string' ? [image, null] : [image.name, JSON.stringify(image)];
  store.db
    .transaction(() => {
      store.pool(tenant, id);
      store.db
        .prepare('UPDATE pools SET image = ?, recipe = ? WHERE tenant = ? AND id = ?')
        .run(name, recipe, tenant, id);
    })
    .immediate();
}

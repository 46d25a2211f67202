import { ConfigError } from '../../errors.js';
import { parseInput } from '../../util/validate.js';
import type { FleetCore } from '../fleet-core.js';
import { describeImage, sameImage } from '../images/image-spec.js';
import { imageOf } from '../images/pool-image.js';
import { checkDesiredFits, checkPoolFits } from '../policy/quota.js';
import { assignTargets, movesTo } from '../policy/scale.js';
import { type Instance, type Pool, tenantInput } from '../state/model.js';
import { overlaps, parseSubnet } from '../state/subnet.js';
import { auditChange, ensureRevision } from './revision.js';
import { type DesiredDocument, type DesiredPool, type DesiredTenant, resolveSecrets } from './schema.js';
import { type PoolSettings, updatePool, updateTenant } from './updates.js';

export const PHASES = ['tenants', 'pools', 'scale', 'prune', 'policy'] as const;
export type Phase = (typeof PHASES)[number];

/** One change reconcile makes (or, in a plan, would make). */
export interface Action {
  phase: Phase;
  action: string;
  /** `<tenant>`, `<tenant>/<pool>` or `<tenant>/<pool>/<instance>`. */
  target: string;
  detail?: string;
}

/** An action and the work that carries it out; the work may return the target it ended on (a string) when it differs. */
export interface Step {
  action: Action;
  run: () => Promise<unknown>;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** The quotas a document's tenant asks for, the fleet's defaults filled in. */
function wantedQuotas(tenant: DesiredTenant) {
  const parsed = parseInput(
    tenantInput,
    { id: tenant.id, subnet: tenant.subnet, ...tenant.quotas },
    `tenant ${tenant.id}`,
  );
  const { maxVcpus, maxMemoryMiB, maxRunning, maxWarm, maxInstances, maxDiskMiB } = parsed;
  return { maxVcpus, maxMemoryMiB, maxRunning, maxWarm, maxInstances, maxDiskMiB };
}

/**
 * Checks the document against the fleet as a whole before reconcile applies any of it: a subnet
 * that overlaps a tenant the document does not list or that changes in place, a pool larger than
 * its tenant's quotas, a secret that cannot be read. A refusal here changes nothing.
 */
export function checkDocument(fleet: FleetCore, doc: DesiredDocument): void {
  for (const tenant of doc.tenants) {
    const subnet = parseSubnet(tenant.subnet);
    const current = fleet.store.findTenant(tenant.id);
    if (current && subnet.cidr !== current.subnet) {
      throw new ConfigError(
        `tenant ${tenant.id}: the document says subnet ${tenant.subnet}, the fleet has ${current.subnet}; a tenant's subnet cannot change in place (remove the tenant from the document and reconcile with --prune first)`,
      );
    }
    for (const other of fleet.store.listTenants()) {
      if (other.id !== tenant.id && overlaps(subnet, parseSubnet(other.subnet))) {
        throw new ConfigError(
          `tenant ${tenant.id}: subnet ${subnet.cidr} overlaps tenant ${other.id}'s ${other.subnet} in the fleet`,
        );
      }
    }
    resolveSecrets(tenant);
  }
  checkDocumentQuotas(doc);
}

/** Checks that every pool fits its tenant's quotas, and that each tenant's pools fit them together. */
export function checkDocumentQuotas(doc: DesiredDocument): void {
  const quotasOf = new Map(doc.tenants.map((tenant) => [tenant.id, wantedQuotas(tenant)]));
  for (const pool of doc.pools) {
    const quotas = quotasOf.get(pool.tenant);
    if (quotas) checkPoolFits(quotas, pool, `pool ${pool.tenant}/${pool.id}`);
  }
  for (const [tenant, quotas] of quotasOf) {
    checkDesiredFits(
      tenant,
      quotas,
      doc.pools.filter((pool) => pool.tenant === tenant),
    );
  }
}

export function planTenants(fleet: FleetCore, doc: DesiredDocument): Step[] {
  const steps: Step[] = [];
  for (const tenant of doc.tenants) {
    const quotas = wantedQuotas(tenant);
    const secrets = resolveSecrets(tenant);
    const current = fleet.store.findTenant(tenant.id);
    const action = (name: string, detail: string, run: Step['run']): Step => ({
      action: { phase: 'tenants', action: name, target: tenant.id, detail },
      run,
    });
    if (!current) {
      steps.push(
        action('create', `subnet ${tenant.subnet}`, async () => {
          fleet.createTenant({ id: tenant.id, subnet: tenant.subnet, ...quotas, secrets });
        }),
      );
      continue;
    }
    const changed = [
      ...Object.keys(quotas).filter(
        (key) => quotas[key as keyof typeof quotas] !== current.quotas[key as keyof typeof quotas],
      ),
      ...(same(Object.entries(secrets).sort(), Object.entries(current.secrets).sort())
        ? []
        : [`secrets (${Object.keys(secrets).join(', ') || 'none'})`]),
    ];
    if (changed.length > 0) {
      steps.push(
        action('update', changed.join(', '), async () => {
          updateTenant(fleet.store, tenant.id, { quotas, secrets });
          auditChange(fleet, tenant.id, 'tenant.update', tenant.id, changed.join(', '));
        }),
      );
    }
  }
  return steps;
}

const settingsOf = (pool: DesiredPool | Pool): PoolSettings => ({
  vcpus: pool.vcpus,
  memoryMiB: pool.memoryMiB,
  dataDiskMiB: pool.dataDiskMiB,
  desired: { ...pool.desired },
  requireLimits: pool.requireLimits,
});

/**
 * Pools to create and pools whose settings changed. An image name or recipe that changed is a
 * rebuild here; an image whose build changed under the same name or recipe (new package versions,
 * vmkit's own guest files) is found by reconcile (it builds to know).
 */
export function planPools(fleet: FleetCore, doc: DesiredDocument): Step[] {
  const steps: Step[] = [];
  for (const pool of doc.pools) {
    const address = `${pool.tenant}/${pool.id}`;
    const current = fleet.store.findTenant(pool.tenant) && fleet.store.findPool(pool.tenant, pool.id);
    const step = (action: string, detail: string, run: Step['run']): Step => ({
      action: { phase: 'pools', action, target: address, detail },
      run,
    });
    if (!current) {
      steps.push(
        step(
          'create',
          `image ${describeImage(pool.image)}, ${pool.vcpus} vCPU, ${pool.memoryMiB} MiB`,
          async () => {
            const { desired, ...settings } = pool;
            await fleet.createPool({ ...settings, ...desired });
          },
        ),
      );
      continue;
    }
    if (!sameImage(imageOf(current), pool.image)) {
      const change =
        current.recipe && typeof pool.image === 'object' && current.image === pool.image.name
          ? `recipe ${current.image} changed`
          : `image ${describeImage(imageOf(current))} -> ${describeImage(pool.image)}`;
      steps.push(
        step('rebuild', change, async () => {
          const done = await ensureRevision(fleet, pool.tenant, pool.id, pool.image);
          return done && `${address}@${done.revision}`;
        }),
      );
    }
    const wanted = settingsOf(pool);
    const had = settingsOf(current);
    const changed = (Object.keys(wanted) as Array<keyof PoolSettings>).filter(
      (key) => !same(wanted[key], had[key]),
    );
    if (changed.length > 0) {
      const detail = changed.map(
        (key) => `${key} ${JSON.stringify(had[key])} -> ${JSON.stringify(wanted[key])}`,
      );
      steps.push(
        step('update', detail.join(', '), async () => {
          updatePool(fleet.store, pool.tenant, pool.id, wanted);
          auditChange(fleet, pool.tenant, 'pool.update', address, detail.join(', '));
        }),
      );
    }
  }
  return steps;
}

/**
 * Instances to move, create or stop so each pool matches its desired counts: instances already in
 * a wanted state stay, Stopped and Ready ones start before any is created, the excess is stopped.
 * With the sleep policy on, a Sleeping instance counts as running (it wakes on demand).
 */
export function planScale(fleet: FleetCore, doc: DesiredDocument): Step[] {
  const steps: Step[] = [];
  const policyOn = doc.sleepPolicy !== undefined;
  for (const pool of doc.pools) {
    const address = `${pool.tenant}/${pool.id}`;
    const instances =
      fleet.store.findTenant(pool.tenant) && fleet.store.findPool(pool.tenant, pool.id)
        ? fleet.store.listInstances({ tenant: pool.tenant, pool: pool.id })
        : [];
    const { plan, free } = assignTargets(pool.desired, instances);
    const step = (action: string, target: string, run: Step['run'], detail?: string): Step => ({
      action: { phase: 'scale', action, target, ...(detail ? { detail } : {}) },
      run,
    });
    for (const extra of free) {
      if (['Running', 'Warm', 'Sleeping'].includes(extra.state)) {
        steps.push(
          step(
            'stop',
            extra.path,
            async () => void (await fleet.stop(extra.path)),
            'beyond the desired count',
          ),
        );
      }
    }
    for (const entry of plan) {
      const existing: Instance | undefined = entry.instance;
      if (!existing) {
        const moves = movesTo('Ready', entry.target);
        steps.push(
          step(
            'create',
            address,
            async () => {
              const created = await fleet.createInstance(address);
              for (const move of moves) await fleet[move](created.path);
              return created.path;
            },
            `then ${moves.join(', ')}`,
          ),
        );
        continue;
      }
      if (policyOn && entry.target === 'Running' && existing.state === 'Sleeping') continue;
      for (const move of movesTo(existing.state, entry.target)) {
        steps.push(step(move, existing.path, async () => void (await fleet[move](existing.path))));
      }
    }
  }
  return steps;
}

/** Pools, then tenants, that the fleet has and the document no longer lists. */
export function planPrune(fleet: FleetCore, doc: DesiredDocument): Step[] {
  const tenants = new Set(doc.tenants.map((t) => t.id));
  const pools = new Set(doc.pools.map((p) => `${p.tenant}/${p.id}`));
  const steps: Step[] = [];
  for (const pool of fleet.store.listPools()) {
    const address = `${pool.tenant}/${pool.id}`;
    if (pools.has(address) || !tenants.has(pool.tenant)) continue;
    const count = fleet.store.listInstances({ tenant: pool.tenant, pool: pool.id }).length;
    steps.push({
      action: { phase: 'prune', action: 'destroy', target: address, detail: `${count} instance(s)` },
      run: () => fleet.destroyPool(address),
    });
  }
  for (const tenant of fleet.store.listTenants()) {
    if (tenants.has(tenant.id)) continue;
    const count = fleet.store.listInstances({ tenant: tenant.id }).length;
    steps.push({
      action: { phase: 'prune', action: 'destroy', target: tenant.id, detail: `${count} instance(s)` },
      run: () => fleet.destroyTenant(tenant.id),
    });
  }
  return steps;
}

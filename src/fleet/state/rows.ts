import type { ResolvedRecipe } from '../../images/recipe.js';
import type { InstanceState } from './lifecycle.js';
import type { Instance, Pool, Tenant } from './model.js';

/** Rows of the fleet database turned into the model, and back. */
export type Row = Record<string, unknown>;
export const now = () => new Date().toISOString();
export const str = (value: unknown) => (value === null || value === undefined ? undefined : String(value));

export function tenantFrom(row: Row): Tenant {
  return {
    id: String(row.id),
    subnet: String(row.subnet),
    gateway: String(row.gateway),
    quotas: {
      maxVcpus: Number(row.max_vcpus),
      maxMemoryMiB: Number(row.max_memory_mib),
      maxRunning: Number(row.max_running),
      maxWarm: Number(row.max_warm),
      maxInstances: Number(row.max_instances),
      maxDiskMiB: Number(row.max_disk_mib),
    },
    secrets: JSON.parse(String(row.secrets)) as Record<string, string>,
    outbound: Boolean(row.outbound),
    uid: Number(row.uid),
    createdAt: String(row.created_at),
  };
}

export function poolFrom(row: Row): Pool {
  return {
    tenant: String(row.tenant),
    id: String(row.id),
    image: String(row.image),
    ...(row.recipe ? { recipe: JSON.parse(String(row.recipe)) as ResolvedRecipe } : {}),
    vcpus: Number(row.vcpus),
    memoryMiB: Number(row.memory_mib),
    dataDiskMiB: Number(row.data_disk_mib),
    desired: {
      running: Number(row.desired_running),
      warm: Number(row.desired_warm),
      sleeping: Number(row.desired_sleeping),
    },
    requireLimits: Number(row.require_limits) === 1,
    revision: String(row.revision),
    createdAt: String(row.created_at),
  };
}

export function instanceFrom(row: Row): Instance {
  const intent = str(row.intent);
  return {
    seq: Number(row.seq),
    tenant: String(row.tenant),
    pool: String(row.pool),
    id: String(row.id),
    path: `${row.tenant}/${row.pool}/${row.id}`,
    state: String(row.state) as InstanceState,
    address: String(row.address),
    mac: String(row.mac),
    revision: String(row.revision),
    pinned: Boolean(row.pinned),
    critical: Boolean(row.critical),
    pid: row.pid === null ? undefined : Number(row.pid),
    pidTicks: str(row.pid_ticks),
    reason: str(row.reason),
    warnings: JSON.parse(String(row.warnings ?? '[]')) as string[],
    createdAt: String(row.created_at),
    updatedAt: String(row.updated_at),
    startedAt: str(row.started_at),
    lastActiveAt: str(row.last_active_at),
    intent: intent
      ? {
          operation: intent,
          from: String(row.intent_from) as InstanceState,
          pid: Number(row.intent_pid),
          ticks: String(row.intent_ticks),
          at: String(row.intent_at),
        }
      : undefined,
  };
}

/** What a finished operation writes besides the state. */
export interface Outcome {
  pid?: number | null;
  pidTicks?: string | null;
  reason?: string | null;
  startedAt?: string | null;
  warnings?: string[];
  /** The image revision it runs (set by start, from its pool's base). */
  revision?: string;
}

export function snake(outcome: Outcome): Record<string, unknown> {
  const names: Record<keyof Outcome, string> = {
    pid: 'pid',
    pidTicks: 'pid_ticks',
    reason: 'reason',
    startedAt: 'started_at',
    warnings: 'warnings',
    revision: 'revision',
  };
  const fields: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(outcome)) {
    if (value !== undefined)
      fields[names[key as keyof Outcome]] = Array.isArray(value) ? JSON.stringify(value) : value;
  }
  return fields;
}

import { ConfigError } from '../../errors.js';
import { type InstanceState, type Operation, RefusedError } from '../state/lifecycle.js';
import type { Pool, Tenant } from '../state/model.js';

/** What a tenant's instances hold now: a VMM (Running or Warm) holds its vCPUs and memory. */
export interface Usage {
  running: number;
  warm: number;
  vcpus: number;
  memoryMiB: number;
}

export interface Holder {
  state: InstanceState;
  vcpus: number;
  memoryMiB: number;
}

export function usageOf(holders: Holder[]): Usage {
  const usage: Usage = { running: 0, warm: 0, vcpus: 0, memoryMiB: 0 };
  for (const holder of holders) {
    if (holder.state !== 'Running' && holder.state !== 'Warm') continue;
    if (holder.state === 'Running') usage.running++;
    else usage.warm++;
    usage.vcpus += holder.vcpus;
    usage.memoryMiB += holder.memoryMiB;
  }
  return usage;
}

/**
 * Refuses an operation that would take the tenant over a quota, naming the quota, what is in
 * use and what the instance would add. `usage` excludes the instance itself.
 */
export function checkQuota(
  tenant: Tenant,
  usage: Usage,
  pool: Pool,
  operation: Operation,
  what: string,
): void {
  const q = tenant.quotas;
  const refuse = (quota: string, used: number, adds: number, max: number) => {
    if (used + adds > max) {
      throw new RefusedError(
        `${what}: ${operation} refused by tenant ${tenant.id}'s quota: ${quota} ${used} in use + ${adds} > ${max}`,
      );
    }
  };
  if (operation === 'start' || operation === 'wake' || operation === 'resume') {
    refuse('running instances', usage.running, 1, q.maxRunning);
  }
  if (operation === 'warm') refuse('warm instances', usage.warm, 1, q.maxWarm);
  if (operation === 'start' || operation === 'wake' || operation === 'resume' || operation === 'warm') {
    refuse('vCPUs', usage.vcpus, pool.vcpus, q.maxVcpus);
    refuse('memory MiB', usage.memoryMiB, pool.memoryMiB, q.maxMemoryMiB);
  }
}

/** Refuses a new instance beyond the pool's count or the tenant's disk quota. */
export function checkCreate(tenant: Tenant, pool: Pool, inPool: number, diskMiB: number, what: string): void {
  if (inPool + 1 > tenant.quotas.maxInstances) {
    throw new RefusedError(
      `${what}: create refused by tenant ${tenant.id}'s quota: instances per pool ${inPool} + 1 > ${tenant.quotas.maxInstances}`,
    );
  }
  if (diskMiB + pool.dataDiskMiB > tenant.quotas.maxDiskMiB) {
    throw new RefusedError(
      `${what}: create refused by tenant ${tenant.id}'s quota: disk MiB ${diskMiB} in use + ${pool.dataDiskMiB} > ${tenant.quotas.maxDiskMiB}`,
    );
  }
}

/**
 * Refuses a pool no instance of which could ever run or be created under its tenant's quotas
 * (one instance's vCPUs, memory or data disk over the tenant's whole allowance).
 */
export function checkPoolFits(
  quotas: Pick<Tenant['quotas'], 'maxVcpus' | 'maxMemoryMiB' | 'maxDiskMiB'>,
  pool: { vcpus: number; memoryMiB: number; dataDiskMiB: number },
  what: string,
): void {
  const over = (field: string, value: number, quota: string, max: number) => {
    if (value > max) {
      throw new ConfigError(
        `${what}: ${field} ${value} is more than the tenant's ${quota} ${max}: no instance of it could run`,
      );
    }
  };
  over('vcpus', pool.vcpus, 'maxVcpus', quotas.maxVcpus);
  over('memoryMiB', pool.memoryMiB, 'maxMemoryMiB', quotas.maxMemoryMiB);
  over('dataDiskMiB', pool.dataDiskMiB, 'maxDiskMiB', quotas.maxDiskMiB);
}

/**
 * Refuses desired counts a tenant's quotas could never hold: its pools' Running and Warm
 * instances together over the vCPU, memory, running or warm quota, a pool over the instances per
 * pool, or their data disks over the disk quota. Sleeping instances hold no VMM.
 */
export function checkDesiredFits(
  tenant: string,
  quotas: Tenant['quotas'],
  pools: Array<{
    id: string;
    vcpus: number;
    memoryMiB: number;
    dataDiskMiB: number;
    desired: { running: number; warm: number; sleeping: number };
  }>,
): void {
  const sum = { vcpus: 0, memoryMiB: 0, running: 0, warm: 0, diskMiB: 0 };
  for (const pool of pools) {
    const { running, warm, sleeping } = pool.desired;
    const count = running + warm + sleeping;
    if (count > quotas.maxInstances) {
      throw new ConfigError(
        `pool ${tenant}/${pool.id}: ${count} instances wanted, more than tenant ${tenant}'s maxInstances ${quotas.maxInstances} per pool`,
      );
    }
    sum.vcpus += (running + warm) * pool.vcpus;
    sum.memoryMiB += (running + warm) * pool.memoryMiB;
    sum.running += running;
    sum.warm += warm;
    sum.diskMiB += count * pool.dataDiskMiB;
  }
  const over = (what: string, wanted: number, quota: string, max: number) => {
    if (wanted > max) {
      throw new ConfigError(
        `tenant ${tenant}: its pools want ${wanted} ${what} together, more than its ${quota} ${max}`,
      );
    }
  };
  over('running instances', sum.running, 'maxRunning', quotas.maxRunning);
  over('warm instances', sum.warm, 'maxWarm', quotas.maxWarm);
  over('vCPUs (running and warm)', sum.vcpus, 'maxVcpus', quotas.maxVcpus);
  over('MiB of memory (running and warm)', sum.memoryMiB, 'maxMemoryMiB', quotas.maxMemoryMiB);
  over('MiB of data disk', sum.diskMiB, 'maxDiskMiB', quotas.maxDiskMiB);
}

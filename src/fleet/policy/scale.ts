import type { FleetCore } from '../fleet-core.js';
import { parseAddress } from '../state/ids.js';
import type { InstanceState } from '../state/lifecycle.js';
import type { Instance, Pool } from '../state/model.js';

export interface ScaleStep {
  instance: string;
  action: 'create' | 'start' | 'warm' | 'resume' | 'sleep' | 'wake' | 'destroy';
}

export type Target = 'Running' | 'Warm' | 'Sleeping';
export type Move = 'start' | 'warm' | 'resume' | 'sleep' | 'wake';

/** The operations that take an instance from `state` to `target`, in order. */
export function movesTo(state: InstanceState, target: Target): Move[] {
  const toRunning: Partial<Record<InstanceState, Move[]>> = {
    Ready: ['start'],
    Stopped: ['start'],
    Warm: ['resume'],
    Sleeping: ['wake'],
    Running: [],
  };
  if (target === 'Running') return toRunning[state] ?? [];
  if (state === target) return [];
  if (target === 'Warm') return state === 'Running' ? ['warm'] : [...(toRunning[state] ?? []), 'warm'];
  return state === 'Running' || state === 'Warm' ? ['sleep'] : [...(toRunning[state] ?? []), 'sleep'];
}

export interface Assignment {
  /** Each wanted instance: an existing one to move (or keep), or none where one must be created. */
  plan: Array<{ instance?: Instance; target: Target }>;
  /** The instances beyond the desired total. */
  free: Instance[];
}

/**
 * Matches a pool's instances to its desired counts: those already in a wanted state keep it, the
 * others (Stopped and Ready ones too) fill the remaining wants before any is created.
 */
export function assignTargets(desired: Pool['desired'], instances: Instance[]): Assignment {
  const free = [...instances];
  const plan: Assignment['plan'] = [];
  for (const target of ['Running', 'Warm', 'Sleeping'] as const) {
    const count = desired[target.toLowerCase() as keyof Pool['desired']];
    for (let n = count; n > 0; n--) {
      const same = free.findIndex((instance) => instance.state === target);
      plan.push({ instance: same >= 0 ? free.splice(same, 1)[0] : undefined, target });
    }
  }
  for (const entry of plan) if (!entry.instance && free.length > 0) entry.instance = free.shift();
  return { plan, free };
}

/**
 * Makes the pool's instances match its desired counts: instances already in a wanted state keep
 * it, the rest are moved (creating instances that are missing), and those beyond the total are
 * destroyed. Returns the steps taken; stops at the first refusal or failure, which it throws.
 */
export async function scalePool(
  fleet: FleetCore,
  address: string,
  onStep?: (step: ScaleStep) => void,
): Promise<ScaleStep[]> {
  const { tenant, pool } = parseAddress(address, 2);
  const spec = fleet.store.pool(tenant, pool);
  const { plan, free } = assignTargets(spec.desired, fleet.store.listInstances({ tenant, pool }));
  const steps: ScaleStep[] = [];
  const run = async (step: ScaleStep, work: () => Promise<unknown>) => {
    await work();
    steps.push(step);
    onStep?.(step);
  };
  for (const extra of free)
    await run({ instance: extra.path, action: 'destroy' }, () => fleet.destroy(extra.path));
  for (const entry of plan) {
    let instance = entry.instance;
    if (!instance) {
      const created = await fleet.createInstance(address);
      instance = created;
      steps.push({ instance: created.path, action: 'create' });
      onStep?.({ instance: created.path, action: 'create' });
    }
    const current = instance;
    for (const action of movesTo(current.state, entry.target)) {
      await run({ instance: current.path, action }, () => fleet[action](current.path));
    }
  }
  return steps;
}

import type { ReconcileReport } from '../desired/reconcile.js';

/** A pool (`tenant/pool`) whose instances a node failed to bring to its share, converge after converge. */
export interface FailingPool {
  pool: string;
  /** The last failure's error, first line. */
  error: string;
  /** When the first failure in a row was. */
  since: string;
  /** How many converges in a row failed it. */
  converges: number;
}

/** Converges in a row that fail a pool before the scheduler moves its slots off the node. */
export const FAILING_AFTER_CONVERGES = 3;

/**
 * The node's failing pools after a converge: a pool with a failed action is counted once more (or
 * starts at one), a pool without one is cleared. A failure of a tenant's own action (its switch,
 * say) counts against every pool of the tenant that the converge touched or that was failing.
 */
export function trackFailures(
  previous: FailingPool[],
  report: Pick<ReconcileReport, 'phases'>,
  now = new Date(),
): FailingPool[] {
  const failed = new Map<string, string>();
  for (const phase of report.phases)
    for (const action of phase.actions) {
      if (action.outcome !== 'failed') continue;
      const [tenant, pool] = action.target.split('/');
      const error = (action.error ?? 'failed').split('\n')[0] as string;
      if (pool !== undefined) failed.set(`${tenant}/${pool}`, error);
      else for (const p of previous) if (p.pool.startsWith(`${tenant}/`)) failed.set(p.pool, error);
    }
  const before = new Map(previous.map((p) => [p.pool, p]));
  return [...failed].map(([pool, error]) => {
    const was = before.get(pool);
    return {
      pool,
      error,
      since: was?.since ?? now.toISOString(),
      converges: (was?.converges ?? 0) + 1,
    };
  });
}

/** The pools a node's record says it keeps failing: its slots of them go elsewhere where there is room. */
export function poolsFailingOn(record: { failing?: FailingPool[] }): Set<string> {
  return new Set(
    (record.failing ?? []).filter((p) => p.converges >= FAILING_AFTER_CONVERGES).map((p) => p.pool),
  );
}

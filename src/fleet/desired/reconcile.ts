import type { FleetCore } from '../fleet-core.js';
import { sameImage } from '../images/image-spec.js';
import { imageOf } from '../images/pool-image.js';
import { type PolicyOptions, runPolicy } from '../policy/policy.js';
import type { Repair } from '../repair.js';
import {
  type Action,
  checkDocument,
  PHASES,
  type Phase,
  planPools,
  planPrune,
  planScale,
  planTenants,
  type Step,
} from './plan.js';
import { ensureRevision } from './revision.js';
import type { DesiredDocument } from './schema.js';

export interface ReconcileOptions {
  /** Destroy pools and tenants the document no longer lists. */
  prune?: boolean;
  /** Only say what would be done. */
  dryRun?: boolean;
  /** Called as each action starts (dry runs too), for progress lines. */
  onAction?: (action: Action) => void;
  /** Called with image build progress. */
  onProgress?: (line: string) => void;
}

export interface ActionResult extends Action {
  outcome: 'planned' | 'done' | 'failed';
  error?: string;
}

export interface PhaseReport {
  phase: Phase;
  actions: ActionResult[];
  /** Why the phase did nothing at all, when it was skipped. */
  skipped?: string;
}

export interface ReconcileReport {
  dryRun: boolean;
  /** What interrupted operations the run settled first. */
  repairs: Repair[];
  phases: PhaseReport[];
  changed: number;
  failed: number;
}

async function runSteps(steps: Step[], options: ReconcileOptions): Promise<ActionResult[]> {
  const results: ActionResult[] = [];
  for (const step of steps) {
    options.onAction?.(step.action);
    if (options.dryRun) {
      results.push({ ...step.action, outcome: 'planned' });
      continue;
    }
    try {
      const result = await step.run();
      const target = typeof result === 'string' ? result : undefined;
      results.push({ ...step.action, ...(target ? { target } : {}), outcome: 'done' });
    } catch (error) {
      results.push({ ...step.action, outcome: 'failed', error: (error as Error).message });
    }
  }
  return results;
}

/** Pools the document lists whose image build differs from their recorded revision. */
async function rebuildChanged(
  fleet: FleetCore,
  doc: DesiredDocument,
  options: ReconcileOptions,
): Promise<ActionResult[]> {
  const results: ActionResult[] = [];
  for (const pool of doc.pools) {
    const current = fleet.store.findTenant(pool.tenant) && fleet.store.findPool(pool.tenant, pool.id);
    if (!current || !sameImage(imageOf(current), pool.image)) continue;
    const action: Action = { phase: 'pools', action: 'rebuild', target: `${pool.tenant}/${pool.id}` };
    try {
      const done = await ensureRevision(fleet, pool.tenant, pool.id, pool.image, options.onProgress);
      if (!done) continue;
      options.onAction?.(action);
      results.push({
        ...action,
        detail: `new revision ${done.revision}${done.baseInvalidated ? '; base snapshot invalidated' : ''}`,
        outcome: 'done',
      });
    } catch (error) {
      results.push({ ...action, outcome: 'failed', error: (error as Error).message });
    }
  }
  return results;
}

/**
 * Converges the fleet towards `doc` in phases: tenants, pools (with image rebuilds), scale,
 * prune (only with `prune`), and the sleep policy (when the document sets one). Each phase plans
 * from the fleet's state as the previous phase left it, so a run interrupted anywhere is finished
 * by the next, which starts by repairing what the interruption left. A fleet that already matches
 * gets a report with nothing changed.
 */
export async function reconcile(
  fleet: FleetCore,
  doc: DesiredDocument,
  options: ReconcileOptions = {},
): Promise<ReconcileReport> {
  const dryRun = Boolean(options.dryRun);
  checkDocument(fleet, doc);
  const repairs = dryRun ? [] : await fleet.repair();
  const phases: PhaseReport[] = [];
  for (const phase of PHASES) {
    if (phase === 'prune' && !options.prune) {
      const unlisted = planPrune(fleet, doc).map((step) => step.action.target);
      phases.push({
        phase,
        actions: [],
        skipped:
          unlisted.length > 0
            ? `not asked to prune (unlisted: ${unlisted.join(', ')})`
            : 'not asked to prune',
      });
      continue;
    }
    if (phase === 'policy') {
      phases.push(await policyPhase(fleet, doc.sleepPolicy, dryRun));
      continue;
    }
    const planner = { tenants: planTenants, pools: planPools, scale: planScale, prune: planPrune }[phase];
    const actions = await runSteps(planner(fleet, doc), options);
    if (phase === 'pools' && !dryRun) actions.push(...(await rebuildChanged(fleet, doc, options)));
    phases.push({ phase, actions });
  }
  const all = phases.flatMap((phase) => phase.actions);
  return {
    dryRun,
    repairs,
    phases,
    changed: all.filter((a) => a.outcome === 'done').length + repairs.length,
    failed: all.filter((a) => a.outcome === 'failed').length,
  };
}

async function policyPhase(
  fleet: FleetCore,
  policy: Partial<PolicyOptions> | undefined,
  dryRun: boolean,
): Promise<PhaseReport> {
  if (!policy) return { phase: 'policy', actions: [], skipped: 'the document sets no sleepPolicy' };
  try {
    const decisions = await runPolicy(fleet, { ...policy, dryRun });
    return {
      phase: 'policy',
      actions: decisions
        .filter((d) => d.action === 'sleep')
        .map((d) => ({
          phase: 'policy',
          action: 'sleep',
          target: d.path,
          detail: d.reasons.join('; '),
          outcome: dryRun ? 'planned' : 'done',
        })),
    };
  } catch (error) {
    return {
      phase: 'policy',
      actions: [
        { phase: 'policy', action: 'sleep', target: '*', outcome: 'failed', error: (error as Error).message },
      ],
    };
  }
}

/** What `plan` and `reconcile` print without --json: one line per action, grouped by phase. */
export function formatReport(report: ReconcileReport): string {
  const lines: string[] = [];
  for (const repair of report.repairs)
    lines.push(`repair: ${repair.path}: ${repair.from} -> ${repair.to}: ${repair.reason}`);
  for (const phase of report.phases) {
    if (phase.actions.length === 0) {
      lines.push(`${phase.phase}: ${phase.skipped ?? 'nothing to do'}`);
      continue;
    }
    for (const a of phase.actions) {
      const verb = a.outcome === 'planned' ? 'would' : a.outcome === 'failed' ? 'FAILED' : 'did';
      lines.push(
        `${phase.phase}: ${verb} ${a.action} ${a.target}${a.detail ? ` (${a.detail})` : ''}${a.error ? `: ${a.error}` : ''}`,
      );
    }
  }
  const planned = report.phases.flatMap((p) => p.actions).length;
  if (report.dryRun)
    lines.push(
      planned === 0 ? 'nothing to do: the fleet matches the document' : `${planned} action(s) planned`,
    );
  else if (report.changed === 0 && report.failed === 0)
    lines.push('nothing changed: the fleet matches the document');
  else lines.push(`${report.changed} change(s), ${report.failed} failure(s)`);
  return lines.join('\n');
}

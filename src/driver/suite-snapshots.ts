import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { AccelRequest } from '../backends/accel.js';
import { type Backend, requireCapability } from '../backends/backend.js';
import { configIdentity } from '../machine/config.js';
import type { Machine } from '../machine/machine.js';
import { resolveMachine } from '../machine/start.js';
import type { Runtime } from '../runtime/runtime.js';
import { startThroughBootCache } from '../snapshot/boot-start.js';
import { hashOf, snapshotId, snapshotRoot } from '../snapshot/manifest.js';
import { type Snapshot, snapshotTaker } from '../snapshot/snapshot.js';
import { openSnapshot, snapshotProblems } from '../snapshot/store.js';
import type { RunLog } from '../util/log.js';
import { elapsedMs } from '../util/time.js';
import type { TestDefinition } from './definition.js';
import { attachments, type LanPlan } from './lan.js';
import { type Resources, startAll, withoutDriverFields } from './resources.js';

/**
 * The snapshot every test of a suite starts from, one per machine: found in the store when a
 * previous run took it with the same configuration and setup, otherwise taken now by booting
 * the machines, running their setups in declaration order and snapshotting them.
 */
export async function prepareSuiteSnapshots(
  definition: TestDefinition,
  lan: LanPlan,
  options: {
    fresh?: boolean;
    accel?: AccelRequest;
    backend?: string | Backend;
    log: RunLog;
    resources: Resources;
  },
): Promise<Record<string, Snapshot>> {
  const { log, resources } = options;
  const names = Object.keys(definition.machines);
  const switches = await resources.createSwitches(lan.vlans, 'setup');
  const templates: Machine[] = [];
  try {
    const key = setupFingerprint(definition, lan);
    const plans = await Promise.all(
      names.map(async (name) => {
        const machineOptions = {
          ...withoutDriverFields(definition.machines[name] ?? {}),
          ...(options.accel ? { accel: options.accel } : {}),
          ...(options.backend ? { backend: options.backend } : {}),
          ...(options.fresh ? { fresh: true } : {}),
          name,
          hosts: lan.hosts,
          runtime: resources.runtime,
          networks: attachments(lan, names, name, switches, true),
        };
        const resolved = await resolveMachine(machineOptions);
        requireCapability(
          resolved.backend,
          'snapshot',
          undefined,
          `tests: start each test from a setup snapshot of ${name}`,
        );
        const version = await resolved.backend.version(resolved.runtime);
        const label = snapshotLabel(definition.name, name);
        return {
          name,
          machineOptions,
          label,
          id: snapshotId(label, configIdentity(resolved.config, version), key),
        };
      }),
    );

    if (!options.fresh) {
      const cached = await Promise.all(plans.map((plan) => cachedSnapshot(plan.id, resources.runtime)));
      if (cached.every((snapshot) => snapshot !== undefined)) {
        log.line('vmkit', `reusing setup snapshots ${plans.map((plan) => plan.id).join(', ')}`);
        return Object.fromEntries(cached.map((snapshot, index) => [names[index], snapshot])) as Record<
          string,
          Snapshot
        >;
      }
    }

    const started = performance.now();
    log.line('vmkit', `booting ${names.join(', ')} once for setup`);
    const machines = await startAll(names, (name) => {
      const plan = plans.find((candidate) => candidate.name === name);
      return resources.track(
        // From the boot cache with a RAM file of its own: the setup snapshot then keeps RAM in a
        // file that every test's clone maps, instead of in the saved state each clone loads.
        startThroughBootCache(
          { ...plan?.machineOptions, name, log: log.for(name), signal: resources.aborter.signal },
          snapshotTaker,
          { ownRam: true },
        ).then((machine) => {
          templates.push(machine);
          return resources.adopt(machine, log, {});
        }),
      );
    });
    for (const name of names) {
      const setup = definition.machines[name]?.setup;
      if (!setup) continue;
      log.line('vmkit', `setup of ${name}`);
      const setupStarted = performance.now();
      await setup(machines[name] as Machine);
      resources.ledger?.record({
        kind: 'setup',
        machine: name,
        name: `setup of ${name}`,
        durationMs: elapsedMs(setupStarted),
        outcome: 'ok',
      });
    }
    const snapshots: Record<string, Snapshot> = {};
    for (const plan of plans) {
      const snapshotStarted = performance.now();
      snapshots[plan.name] = await (machines[plan.name] as Machine).snapshot(plan.label, { stop: true, key });
      resources.ledger?.record({
        kind: 'snapshot',
        machine: plan.name,
        name: `snapshot ${plan.label}`,
        durationMs: elapsedMs(snapshotStarted),
        outcome: 'ok',
      });
    }
    log.line(
      'vmkit',
      `setup snapshots taken after ${elapsedMs(started)} ms: ${plans.map((plan) => plan.id).join(', ')}`,
    );
    return snapshots;
  } finally {
    await resources.release(templates, switches.values());
  }
}

async function cachedSnapshot(id: string, runtime: Runtime): Promise<Snapshot | undefined> {
  if (!existsSync(join(snapshotRoot(), id))) return undefined;
  const snapshot = await openSnapshot(id).catch(() => undefined);
  if (!snapshot || (await snapshotProblems(snapshot, runtime)).length > 0) return undefined;
  return snapshot;
}

/** What the guest state after setup depends on besides the machine configuration. */
export function setupFingerprint(definition: TestDefinition, lan: LanPlan): string {
  const machines = Object.entries(definition.machines).map(([name, declaration]) => ({
    name,
    declaration: { ...declaration, setup: declaration.setup?.toString() ?? null },
  }));
  return hashOf({ suite: definition.name ?? null, machines, hosts: lan.hosts });
}

function snapshotLabel(suite: string | undefined, machine: string): string {
  const slug = (suite ?? 'suite')
    .toLowerCase()
    .replace(/[^a-z0-9_.-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 30);
  return `${slug || 'suite'}.${machine}`;
}

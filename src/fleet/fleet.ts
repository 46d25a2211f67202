import type { Machine } from '../machine/machine.js';
import { type ReconcileOptions, type ReconcileReport, reconcile } from './desired/reconcile.js';
import type { DesiredDocument } from './desired/schema.js';
import { FleetCore } from './fleet-core.js';
import type { BuiltPoolImage } from './images/pool-image.js';
import { type Rebuilt, rebuildPool } from './images/rebuild.js';
import { type InstanceMachineOptions, instanceMachine } from './instance-machine.js';
import { instanceInfo, nodeInfo, nodeStats } from './node.js';
import { type Decision, type PolicyOptions, runPolicy, type Sample, sampleFleet } from './policy/policy.js';
import { type ScaleStep, scalePool } from './policy/scale.js';
import { adoptSleepState, packSleepState, type TravelFile } from './snapshots/move-state.js';
import type { Instance } from './state/model.js';

export type { FleetOptions } from './fleet-core.js';

/**
 * A fleet of tenants, pools and instances kept in one folder: the SQLite state, each instance's
 * detached VMM and files, each tenant's detached switch and audit log. Every lifecycle operation
 * records its intent before its first side effect; `repair()` settles what an interrupted one left.
 * Every operation is a method: on one tenant, pool or instance (FleetCore's), or on the whole fleet.
 */
export class Fleet extends FleetCore {
  /**
   * Brings the fleet to a desired-state document: tenants, pools, scale, prune (with `prune`) and
   * the sleep policy, phase by phase, after repairing what an interrupted run left.
   */
  reconcile(doc: DesiredDocument, options: ReconcileOptions = {}): Promise<ReconcileReport> {
    return reconcile(this, doc, options);
  }

  /** Makes the pool's instances match its desired counts; returns the steps taken. */
  scalePool(address: string, onStep?: (step: ScaleStep) => void): Promise<ScaleStep[]> {
    return scalePool(this, address, onStep);
  }

  /** Builds the pool's image again and moves the pool to the new revision (`built`: one built already). */
  rebuildPool(address: string, built?: BuiltPoolImage): Promise<Rebuilt> {
    return rebuildPool(this, address, built);
  }

  /** Samples, decides and (unless `dryRun`) puts the chosen instances to sleep; returns the decisions. */
  runPolicy(
    options: { [K in keyof PolicyOptions]?: number | undefined } & { dryRun?: boolean } = {},
  ): Promise<Decision[]> {
    return runPolicy(this, options);
  }

  /** Samples every Running and Warm instance over `sampleMs`: CPU, network bytes, resident memory. */
  sample(sampleMs: number): Promise<Sample[]> {
    return sampleFleet(this, sampleMs);
  }

  /** This host as `node info` shows it: CPUs, memory, accelerator, cgroups, limits, sandbox, jail. */
  nodeInfo(): ReturnType<typeof nodeInfo> {
    return nodeInfo(this);
  }

  /** Instances by state and by tenant and pool, and the host memory their VMMs use. */
  nodeStats(): ReturnType<typeof nodeStats> {
    return nodeStats(this);
  }

  /** Everything `instance info` shows: the record, its VMM's memory, its sleep state's size. */
  instanceInfo(instance: Instance): ReturnType<typeof instanceInfo> {
    return instanceInfo(this, instance);
  }

  /**
   * A Running instance as a Machine: execute, waits, copies and systemd calls, each audited. It
   * holds the instance's agent until it closes (other processes' commands wait meanwhile); closing
   * it leaves the instance running.
   */
  machine(address: string, options?: InstanceMachineOptions): Promise<Machine> {
    return instanceMachine(this, address, options);
  }

  /** Packs a Sleeping instance's state into `outDir` for another node (a cluster move, move-state.ts). */
  packForMove(address: string, outDir: string): Promise<TravelFile[]> {
    const instance = this.instance(address);
    const pool = this.store.pool(instance.tenant, instance.pool);
    return packSleepState(this.vm(instance).ctx, instance, pool, outDir);
  }

  /**
   * A new Sleeping instance `<tenant>/<pool>/<id>` made from another node's sleep state in `inDir`
   * (packForMove's files, checked); it slept as `fromAddress`, and its wake gives it its address here.
   */
  async arrive(poolAddress: string, id: string, inDir: string, fromAddress: string): Promise<Instance> {
    const created = await this.createInstance(poolAddress, id);
    return this.operate(created.path, 'arrive', async (instance, pool) => {
      const tenant = this.store.tenant(pool.tenant);
      const delta = await adoptSleepState(this.vm(instance).ctx, instance, pool, tenant, inDir, fromAddress);
      return {
        detail: `sleep state from another node (${fromAddress}), a delta of ${delta.pages} pages here`,
      };
    });
  }
}

import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import type { RawResult } from '../agent/backdoor.js';
import { stopSwitchDaemon } from '../network/switch-daemon.js';
import { Runtime } from '../runtime/runtime.js';
import { parseInput } from '../util/validate.js';
import { execInstance, shellInstance } from './exec.js';
import { describeImage } from './images/image-spec.js';
import { type BuiltPoolImage, buildPoolImage, type FleetBuilder, imageOf } from './images/pool-image.js';
import { checkPoolFits } from './policy/quota.js';
import { checkRequiredLimits } from './policy/required-limits.js';
import { type Repair, type RepairHooks, repairFleet, repairInstance } from './repair.js';
import { ensureBase, pruneBases, removeBaseLeftovers, removeBases } from './snapshots/base.js';
import { bootVm, finishWake, sleepVm, wakeVm } from './snapshots/sleep.js';
import { audit } from './state/audit.js';
import { defaultFleetDir } from './state/db.js';
import { parseAddress } from './state/ids.js';
import { type Operation, RefusedError } from './state/lifecycle.js';
import {
  type Instance,
  type Pool,
  type PoolInput,
  poolInput,
  type Tenant,
  type TenantInput,
} from './state/model.js';
import type { Outcome } from './state/rows.js';
import { killPoint } from './state/steps.js';
import { FleetStore } from './state/store.js';
import { InstanceAgents } from './vmm/agents.js';
import { foldMetadataReads } from './vmm/metadata-reads.js';
import {
  consoleText,
  instanceDir,
  killVm,
  namePorts,
  networkDir,
  pauseVm,
  prepareVm,
  removeSleepState,
  removeVmFiles,
  resumeVm,
  stopVm,
  type VmContext,
} from './vmm/vm.js';
import type { OutputStreams } from './vmm/vm-exec.js';

export interface FleetOptions {
  /** The fleet folder (default: $VMKIT_FLEET_DIR, else $XDG_DATA_HOME/vmkit/fleet). */
  dir?: string;
  log?: (line: string) => void;
  /** Where recipe images are built: "vm" (default, no root needed) or "host" (mmdebstrap, root). */
  builder?: FleetBuilder;
}

/**
 * The fleet's state and the operations on one tenant, pool or instance; `Fleet` (fleet.ts) adds
 * the whole-fleet workflows, whose modules name this class: they would otherwise import the
 * class that imports them.
 */
export class FleetCore {
  readonly store: FleetStore;
  readonly dir: string;
  /** Caches host facts (the accelerator, QEMU's features) for this fleet's calls. */
  readonly runtime = new Runtime();
  readonly builder: FleetBuilder;
  /** The instances' agents this process's commands share (one attachment per instance). */
  readonly agents = new InstanceAgents();
  private readonly log: (line: string) => void;

  constructor(options: FleetOptions = {}) {
    // Absolute: the paths written into disks' headers and VMMs' arguments outlive the working folder.
    this.dir = resolve(options.dir ?? defaultFleetDir());
    this.store = new FleetStore(this.dir);
    this.log = options.log ?? (() => {});
    this.builder = options.builder ?? 'vm';
  }

  async close(): Promise<void> {
    this.agents.close();
    this.store.close();
    await this.runtime.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Settles interrupted operations and instances whose VMM is gone; each repair is audited. */
  async repair(): Promise<Repair[]> {
    await removeBaseLeftovers(this.dir); // bases whose making was cut off
    const repairs = await repairFleet(this.store, this.repairHooks);
    for (const repair of repairs) this.auditRepair(repair);
    return repairs;
  }

  /** What repair needs of a live fleet: a wake whose guest resumed is finished, not undone. */
  private readonly repairHooks: RepairHooks = {
    finishWake: (instance) =>
      finishWake(this.vm(instance).ctx, instance, this.store.pool(instance.tenant, instance.pool)),
  };

  private auditRepair(repair: Repair): void {
    audit(this.dir, {
      tenant: repair.path.split('/')[0] as string,
      action: 'repair',
      target: repair.path,
      outcome: 'repaired',
      detail: `${repair.from} -> ${repair.to}: ${repair.reason}`,
    });
  }

  createTenant(input: TenantInput): Tenant {
    const tenant = this.store.createTenant(input);
    audit(this.dir, {
      tenant: tenant.id,
      action: 'tenant.create',
      target: tenant.id,
      outcome: 'ok',
      detail: tenant.subnet,
    });
    return tenant;
  }

  /** Destroys the tenant's pools and instances, its switch and its record (its audit log stays). */
  async destroyTenant(id: string): Promise<void> {
    this.store.tenant(id);
    for (const pool of this.store.listPools(id)) await this.destroyPool(`${id}/${pool.id}`);
    await stopSwitchDaemon(networkDir(this.dir, id));
    rmSync(networkDir(this.dir, id), { recursive: true, force: true });
    this.store.deleteTenant(id);
    audit(this.dir, { tenant: id, action: 'tenant.destroy', target: id, outcome: 'ok' });
  }

  /** Creates a pool; its revision is the content key of its image (a name or a recipe), built if needed. */
  async createPool(input: PoolInput): Promise<Pool> {
    const parsed = parseInput(poolInput, input, 'pool');
    // bad input fails before a build, not after it
    checkPoolFits(this.store.tenant(parsed.tenant).quotas, parsed, `pool ${parsed.tenant}/${parsed.id}`);
    if (this.store.findPool(parsed.tenant, parsed.id))
      throw new RefusedError(`pool ${parsed.tenant}/${parsed.id} already exists`);
    const pool = this.store.createPool(input, (await this.buildImageOf(input)).build);
    audit(this.dir, {
      tenant: pool.tenant,
      action: 'pool.create',
      target: `${pool.tenant}/${pool.id}`,
      outcome: 'ok',
      detail: `image ${describeImage(imageOf(pool))} ${pool.revision}`,
    });
    return pool;
  }

  /** Builds (or finds) the image a pool input or a pool names, through this fleet's builder. */
  buildImageOf(pool: PoolInput | Pool): Promise<BuiltPoolImage> {
    const image = 'revision' in pool ? imageOf(pool) : parseInput(poolInput, pool, 'pool').image;
    return buildPoolImage(image, {
      runtime: this.runtime,
      builder: this.builder,
      onProgress: (line) => this.log(`image: ${line}`),
    });
  }

  async destroyPool(address: string): Promise<void> {
    const { tenant, pool } = parseAddress(address, 2);
    this.store.pool(tenant, pool);
    for (const instance of this.store.listInstances({ tenant, pool })) await this.destroy(instance.path);
    removeBases(this.dir, tenant, pool);
    this.store.deletePool(tenant, pool);
    audit(this.dir, { tenant, action: 'pool.destroy', target: address, outcome: 'ok' });
  }

  instance(address: string): Instance {
    const { tenant, pool, instance } = parseAddress(address, 3);
    return this.store.instance(tenant, pool, instance);
  }

  /** Creates an instance (Created, then Ready once its folder and data disk exist). */
  async createInstance(address: string, id?: string): Promise<Instance> {
    const { tenant, pool } = parseAddress(address, 2);
    let created: Instance;
    try {
      created = this.store.createInstance(tenant, pool, id);
    } catch (error) {
      if (error instanceof RefusedError) {
        audit(this.dir, {
          tenant,
          action: 'create',
          target: address,
          outcome: 'refused',
          detail: error.message,
        });
      }
      throw error;
    }
    try {
      await prepareVm(this.dir, created, this.store.pool(tenant, pool), this.store.tenant(tenant));
      const ready = this.store.finish(created.seq, 'Ready');
      audit(this.dir, {
        tenant,
        action: 'create',
        target: ready.path,
        outcome: 'ok',
        detail: `address ${ready.address}, MAC ${ready.mac}`,
      });
      return ready;
    } catch (error) {
      await repairInstance(
        this.store,
        this.store.instanceBySeq(created.seq),
        `create failed: ${(error as Error).message}`,
      );
      audit(this.dir, {
        tenant,
        action: 'create',
        target: created.path,
        outcome: 'failed',
        detail: (error as Error).message,
      });
      throw error;
    }
  }

  /**
   * One lifecycle operation: checked and recorded as an intent in one transaction, carried out,
   * then finished in another. A refusal and a failure are audited; a failure is repaired at once.
   */
  protected async operate(
    address: string,
    operation: Operation,
    work: (instance: Instance, pool: Pool) => Promise<{ outcome?: Outcome; detail?: string }>,
  ): Promise<Instance> {
    const current = this.instance(address);
    const event = { tenant: current.tenant, action: operation, target: current.path };
    let begun: ReturnType<FleetStore['begin']>;
    try {
      begun = this.store.begin(current.seq, operation);
    } catch (error) {
      if (error instanceof RefusedError)
        audit(this.dir, { ...event, outcome: 'refused', detail: error.message });
      throw error;
    }
    killPoint(operation, 'begun');
    try {
      const result = await work(begun.instance, this.store.pool(current.tenant, current.pool));
      const done = this.store.finish(current.seq, begun.to, { reason: null, ...result.outcome });
      audit(this.dir, {
        ...event,
        outcome: 'ok',
        detail: `${begun.instance.state} -> ${begun.to}${result.detail ? `: ${result.detail}` : ''}`,
      });
      return done;
    } catch (error) {
      const message = (error as Error).message;
      audit(this.dir, {
        ...event,
        outcome: error instanceof RefusedError ? 'refused' : 'failed',
        detail: message,
      });
      const repair = await repairInstance(
        this.store,
        this.store.instanceBySeq(current.seq),
        `${operation} failed`,
        this.repairHooks,
      ).catch(() => undefined);
      if (repair) this.auditRepair(repair);
      throw error;
    }
  }

  protected vm(instance: Instance): { dir: string; ctx: VmContext } {
    return {
      dir: instanceDir(this.dir, instance.seq),
      ctx: { fleetDir: this.dir, runtime: this.runtime, log: this.log },
    };
  }

  /** Tells the tenant's switch which MAC is which instance, for its per-port counters. */
  private nameSwitchPorts(tenant: string): void {
    namePorts(this.dir, tenant, this.store.listInstances({ tenant }));
  }

  /** Starts the instance from its pool's base snapshot, made first (a cold boot) if there is none. */
  start(address: string): Promise<Instance> {
    return this.operate(address, 'start', async (instance, pool) => {
      checkRequiredLimits(pool);
      this.nameSwitchPorts(instance.tenant);
      const tenant = this.store.tenant(pool.tenant);
      const base = await ensureBase(this.vm(instance).ctx, pool, tenant);
      const { record, warnings, steps } = await bootVm(this.vm(instance).ctx, instance, pool, base, tenant);
      return {
        outcome: {
          pid: record.pid,
          pidTicks: record.startTicks,
          startedAt: new Date().toISOString(),
          warnings,
          revision: base.revision,
        },
        detail: `pid ${record.pid}, from base ${base.id} (${steps})`,
      };
    });
  }

  stop(address: string): Promise<Instance> {
    return this.operate(address, 'stop', async (instance) => {
      const { dir } = this.vm(instance);
      await stopVm(dir, instance.path, this.vm(instance).ctx.log);
      killPoint('stop', 'VMM ended');
      removeSleepState(dir, true);
      return { outcome: { pid: null, pidTicks: null } };
    });
  }

  warm(address: string): Promise<Instance> {
    return this.operate(address, 'warm', async (instance) => {
      await pauseVm(this.vm(instance).dir, instance.path);
      return {};
    });
  }

  resume(address: string): Promise<Instance> {
    return this.operate(address, 'resume', async (instance) => {
      await resumeVm(this.vm(instance).dir, instance.path);
      return {};
    });
  }

  sleep(address: string): Promise<Instance> {
    return this.operate(address, 'sleep', async (instance, pool) => {
      const { delta, steps } = await sleepVm(
        this.vm(instance).ctx,
        instance,
        pool,
        this.store.tenant(instance.tenant),
      );
      const share = (delta.bytes / delta.ramBytes).toFixed(3);
      return {
        outcome: { pid: null, pidTicks: null },
        detail: `delta of ${delta.pages} pages, ${delta.bytes} bytes (${share} of RAM; ${steps})`,
      };
    });
  }

  wake(address: string): Promise<Instance> {
    return this.operate(address, 'wake', async (instance, pool) => {
      checkRequiredLimits(pool);
      this.nameSwitchPorts(instance.tenant);
      const tenant = this.store.tenant(pool.tenant);
      const { record, warnings, steps } = await wakeVm(this.vm(instance).ctx, instance, pool, tenant);
      pruneBases(this.dir, pool, this.store.listInstances({ tenant: pool.tenant, pool: pool.id }));
      return {
        outcome: { pid: record.pid, pidTicks: record.startTicks, warnings },
        detail: `restored, pid ${record.pid} (${steps})`,
      };
    });
  }

  /** Ends the VMM if any and removes the instance's disks, sleep state and record. */
  async destroy(address: string): Promise<void> {
    await this.operate(address, 'destroy', async (instance) => {
      const { dir } = this.vm(instance);
      await killVm(dir, this.vm(instance).ctx.log);
      foldMetadataReads(this.dir, [instance]); // before its folder, and the spool in it, go
      removeVmFiles(dir);
      return {};
    });
    this.store.deleteInstance(this.instance(address).seq);
  }

  /** Runs a command in a Running instance; with `stream`, its output goes there as it comes. */
  exec(address: string, command: string[], timeoutMs = 60_000, stream?: OutputStreams): Promise<RawResult> {
    return execInstance(this, address, command, timeoutMs, stream);
  }

  /**
   * A line-by-line root shell on a Running instance: each line `next()` gives is run as its own
   * sh script (no state such as the working folder carries over), over one attachment.
   */
  shell(
    address: string,
    next: () => Promise<string | undefined>,
    onResult: (script: string, result: RawResult) => void,
    timeoutMs = 60_000,
  ): Promise<number> {
    return shellInstance(this, address, next, onResult, timeoutMs);
  }

  /** Sets the pinned and critical flags (both exempt the instance from the sleep policy). */
  setFlags(address: string, flags: { pinned?: boolean; critical?: boolean }): Instance {
    const instance = this.instance(address);
    const done = this.store.setFlags(instance.seq, flags);
    const detail = `pinned ${done.pinned}, critical ${done.critical}`;
    audit(this.dir, { tenant: instance.tenant, action: 'set', target: instance.path, outcome: 'ok', detail });
    return done;
  }

  /** What the instance's serial console printed since its last boot. */
  logs(address: string): string {
    return consoleText(this.dir, this.instance(address));
  }
}

import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chooseAccel } from '../../backends/accel.js';
import { ConfigError } from '../../errors.js';
import { profileNamed } from '../../guest/profiles/index.js';
import type { BootImage } from '../../images/types.js';
import { macAddress } from '../../machine/identity.js';
import { ensureSwitchDaemon } from '../../network/switch-daemon.js';
import { ensurePrivateDir, makePrivateDir, PRIVATE_FILE } from '../../util/private.js';
import { createQcow2 } from '../../util/qcow2.js';
import { processRunsSync } from '../../util/scratch.js';
import { sparseDigest } from '../../util/sparse.js';
import { audit } from '../state/audit.js';
import type { Instance, Pool, Tenant } from '../state/model.js';
import { type StepTimer, stepTimer } from '../state/steps.js';
import { chownTree, shareWithTenant, vmmUid } from '../vmm/jail.js';
import { ensureRecordsDir } from '../vmm/records.js';
import { secretsDiskPath, writeSecretsDisk } from '../vmm/secrets-disk.js';
import {
  dataDiskPath,
  guestImage,
  killVm,
  launchVm,
  liveRamPath,
  networkDir,
  removeVmFiles,
  rootDiskPath,
  runInGuest,
  stopVm,
  type VmContext,
  type VmLayout,
  withVm,
} from '../vmm/vm.js';
import { METADATA_NIC_ADDRESS, metadataNic, OUTBOUND_NIC } from '../vmm/vmm-options.js';
import { fleetBackend } from '../vmm/vmms.js';
import { type BaseShape, baseCacheId, copyCachedBase, saveBaseToCache } from './base-cache.js';
import { baseRuns } from './delta.js';

/**
 * A pool's base snapshot: one guest of the pool's shape booted from its image, set up, idle,
 * then saved as device state (`state`) and a sparse copy of its RAM (`ram`). Instances start
 * from it, and their sleep states hold only the RAM pages that differ from it. One per pool
 * revision, under `<fleet>/base/<tenant>/<pool>/<revision>/`; made on first need.
 */
export interface BaseSnapshot {
  dir: string;
  revision: string;
  /** Random per base: a sleep state names the base it is a delta of. */
  id: string;
  ram: string;
  state: string;
  ramDigest: string;
  /** Bytes of non-zero pages in `ram`. */
  ramDataBytes: number;
  memoryMiB: number;
  createdAt: string;
  /** How long each step of making it took. */
  steps: string;
}

const BOOT_TIMEOUT_MS = 120_000;
const SAVE_TIMEOUT_MS = 300_000;
const BUILDING = '.b-';
/**
 * The fleet's networks are IPv4. Without this, the kernel keeps sending IPv6 router
 * solicitations (backing off, for ever), and an idle instance shows traffic to the sleep policy.
 */
const QUIET_IPV6 =
  'for f in /proc/sys/net/ipv6/conf/*/router_solicitations; do echo 0 > "$f"; done 2> /dev/null; true';

export const poolBasesDir = (fleetDir: string, tenant: string, pool: string) =>
  join(fleetDir, 'base', tenant, pool);
export const baseDir = (fleetDir: string, pool: Pool, revision: string) =>
  join(poolBasesDir(fleetDir, pool.tenant, pool.id), revision.slice(0, 16));

/** The pool's base for `revision`, if it was made (and completely). */
export function findBase(fleetDir: string, pool: Pool, revision: string): BaseSnapshot | undefined {
  try {
    return JSON.parse(readFileSync(join(baseDir(fleetDir, pool, revision), 'base.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

/** The pool's base for its current revision, made (and audited) first if it has none. */
export async function ensureBase(ctx: VmContext, pool: Pool, tenant: Tenant): Promise<BaseSnapshot> {
  const found = findBase(ctx.fleetDir, pool, pool.revision);
  if (found) return found;
  const base = await makeBase(ctx, pool, tenant);
  audit(ctx.fleetDir, {
    tenant: pool.tenant,
    action: 'base.create',
    target: `${pool.tenant}/${pool.id}`,
    outcome: 'ok',
    detail: `base ${base.id} of revision ${base.revision} (${base.steps})`,
  });
  return base;
}

/** Base folders being made by processes that are gone: their VMMs are ended, the folders removed. */
export async function removeBaseLeftovers(fleetDir: string): Promise<void> {
  const root = join(fleetDir, 'base');
  for (const name of existsSync(root) ? readdirSync(root) : []) {
    if (!name.startsWith(BUILDING) || name.endsWith('.records')) continue;
    const pid = Number(name.slice(BUILDING.length).split('-')[0]);
    if (pid !== process.pid && processRunsSync(pid)) continue;
    await killVm(join(root, name));
    removeVmFiles(join(root, name));
  }
}

async function makeBase(ctx: VmContext, pool: Pool, tenant: Tenant): Promise<BaseSnapshot> {
  await removeBaseLeftovers(ctx.fleetDir);
  const what = `the base of pool ${pool.tenant}/${pool.id}`;
  const image = await guestImage(ctx, pool.revision, pool, what);
  // Short: its sockets live in it, and unix socket paths stop at 107 bytes.
  const dir = join(ctx.fleetDir, 'base', `${BUILDING}${process.pid}-${randomBytes(3).toString('hex')}`);
  if (Buffer.byteLength(join(dir, 'xfer.sock')) > 107)
    throw new ConfigError(
      `fleet folder ${ctx.fleetDir} is too long for unix socket paths; use a shorter --fleet-dir`,
    );
  ensurePrivateDir(join(dir, '..'));
  makePrivateDir(dir);
  const timer = stepTimer(ctx.log, `making ${what}`);
  const log = (line: string) => ctx.log?.(line);
  const warn = (line: string) => {
    log(line);
    process.emitWarning(line, 'VmkitBootCache');
  };
  const uid = vmmUid(tenant, ctx.runtime);
  const shape: BaseShape = {
    pool,
    image,
    setup: baseSetup(image, tenant),
    outbound: tenant.outbound === true,
    accel: (await chooseAccel('auto', ctx.runtime)).accel,
    vmmVersion: await fleetBackend().version(ctx.runtime),
    runtime: ctx.runtime,
  };
  try {
    const cacheId = await baseCacheId(shape);
    const copied = cacheId ? await copyCachedBase(cacheId, dir, shape, warn) : undefined;
    if (copied) timer.step(`copied from boot cache entry ${cacheId}`);
    const ram = copied ?? (await bootBase(ctx, pool, tenant, image, dir, shape.setup, timer));
    const final = baseDir(ctx.fleetDir, pool, pool.revision);
    const base: BaseSnapshot = {
      dir: final,
      revision: pool.revision,
      id: randomBytes(8).toString('hex'),
      ram: join(final, 'ram'),
      state: join(final, 'state'),
      ramDigest: ram.digest,
      ramDataBytes: ram.dataBytes,
      memoryMiB: pool.memoryMiB,
      createdAt: new Date().toISOString(),
      steps: timer.summary(),
    };
    rmSync(join(dir, 'base.json'), { force: true }); // the VMM's uid may have left a link there
    writeFileSync(join(dir, 'base.json'), JSON.stringify(base, null, 2), { flag: 'wx', mode: PRIVATE_FILE });
    for (const name of readdirSync(dir)) {
      if (!['base.json', 'ram', 'ram.runs', 'state', 'root.qcow2'].includes(name))
        rmSync(join(dir, name), { recursive: true, force: true });
    }
    if (!copied && cacheId) await saveBaseToCache(cacheId, dir, shape, log, warn);
    if (copied) await baseRuns(join(dir, 'ram')); // found once here, so that no start or wake scans the base
    if (uid !== undefined) {
      chownTree(dir, 0); // the jailed VMM wrote its state as the tenant's uid: a base is root's, read-only
      // Its VMMs read it in their jails (the state, the root disk's base): their tenant's group may.
      shareWithTenant(dir, uid);
    } // unjailed, the VMM ran as the caller: the base is the caller's already (chown would be EPERM)
    ensurePrivateDir(poolBasesDir(ctx.fleetDir, pool.tenant, pool.id));
    const raced = findBase(ctx.fleetDir, pool, pool.revision);
    if (raced) return raced; // another call made it meanwhile: theirs is the one
    try {
      renameSync(dir, final);
    } catch (error) {
      const lost = findBase(ctx.fleetDir, pool, pool.revision); // made between the check and the rename
      if (lost) return lost;
      throw error;
    }
    return base;
  } finally {
    if (existsSync(dir)) await killVm(dir);
    removeVmFiles(dir); // the folder if it is still there, and its records in any case
  }
}

/** What the base's guest runs after its boot: quiet IPv6, its NICs set up, its disks synced. */
function baseSetup(image: BootImage, tenant: Tenant): string {
  const setup = profileNamed(image.profile).afterBoot({
    hostname: 'base',
    nics: [{ index: 0 }, { index: 1, address: METADATA_NIC_ADDRESS }],
    ...(tenant.outbound ? { hostNic: OUTBOUND_NIC } : {}),
    hosts: {},
  });
  return `${QUIET_IPV6}\n${setup}\nsync`;
}

/**
 * Boots the base's guest in `dir` from its image, sets it up, saves its state and RAM there and
 * ends its VMM; returns the RAM's digest and data bytes.
 */
async function bootBase(
  ctx: VmContext,
  pool: Pool,
  tenant: Tenant,
  image: BootImage,
  dir: string,
  setup: string,
  timer: StepTimer,
): Promise<{ digest: string; dataBytes: number }> {
  const what = `the base of pool ${pool.tenant}/${pool.id}`;
  await createQcow2(dataDiskPath(dir), { sizeMiB: pool.dataDiskMiB });
  if (image.disk) await createQcow2(rootDiskPath(dir), { base: image.disk });
  writeSecretsDisk(dir); // blank: secrets never enter a base
  await ensureSwitchDaemon(networkDir(ctx.fleetDir, pool.tenant), pool.tenant);
  const layout: VmLayout = {
    name: `${pool.tenant}-${pool.id}-base`,
    dir,
    tenant: pool.tenant,
    mac: macAddress(`fleet/${pool.tenant}/${pool.id}`, 'base'),
    metadataNic: metadataNic(`fleet/${pool.tenant}/${pool.id}/base`),
    outbound: tenant.outbound,
    uid: vmmUid(tenant, ctx.runtime),
  };
  await launchVm(ctx, layout, pool, image, false);
  await withVm(dir, layout.name, async (vm) => {
    await runInGuest(vm, setup, `set-up of ${what}`, BOOT_TIMEOUT_MS);
    timer.step('booted');
    await vm.pause();
    await vm.writeState(join(dir, 'state'), { ramShared: true, timeoutMs: SAVE_TIMEOUT_MS, what });
  });
  // Written beside the folder while its VMM (the tenant's uid) runs on, moved in once it ended.
  const records = ensureRecordsDir(dir);
  const ram = await sparseDigest(liveRamPath(dir), join(records, 'ram'));
  await baseRuns(join(records, 'ram')); // found once here, so that no start or wake scans the base
  timer.step('saved');
  await stopVm(dir, layout.name);
  for (const name of ['ram', 'ram.runs']) renameSync(join(records, name), join(dir, name));
  rmSync(dataDiskPath(dir), { force: true });
  rmSync(secretsDiskPath(dir), { force: true });
  return ram;
}

/**
 * Removes the pool's bases that no instance needs: every one but the pool's current revision,
 * unless an instance runs on it or sleeps as a delta of it. Returns the revisions removed.
 */
export function pruneBases(fleetDir: string, pool: Pool, instances: Instance[]): string[] {
  const root = poolBasesDir(fleetDir, pool.tenant, pool.id);
  const needed = new Set(
    instances
      .filter((i) => i.pool === pool.id && ['Running', 'Warm', 'Sleeping'].includes(i.state))
      .map((i) => i.revision.slice(0, 16)),
  );
  needed.add(pool.revision.slice(0, 16));
  const removed: string[] = [];
  for (const name of existsSync(root) ? readdirSync(root) : []) {
    if (needed.has(name)) continue;
    rmSync(join(root, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** Removes every base of the pool (the pool is being destroyed). */
export function removeBases(fleetDir: string, tenant: string, pool: string): void {
  rmSync(poolBasesDir(fleetDir, tenant, pool), { recursive: true, force: true });
  const tenantDir = join(fleetDir, 'base', tenant);
  if (existsSync(tenantDir) && readdirSync(tenantDir).length === 0) rmSync(tenantDir, { recursive: true });
}

// Fleet benchmark: wake from sleep to first command against a cold start of the same instance
// (its pool's base invalidated, so the start boots a guest from the image), a cold start whose new
// base is copied from the boot cache (VMKIT_BOOT_CACHE on, in a store of its own) and a start
// from the pool's base; what a Running, Warm and Sleeping instance costs in host memory; density measured
// by starting instances until a budget of guest memory is reached and reading what the host then
// holds; what a sleeping instance costs, as it is; the sleep state (a delta of the base) against
// guest RAM; where wake's time goes. Prints one JSON object.
//
//   node --import tsx bench/fleet.ts [--rounds N] [--memory-mib N] [--density-budget-mib N]

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Fleet, readAudit } from 'vmkit';
import { findBase } from '../src/fleet/snapshots/base.js';
// Where an instance's folder and its live RAM file are: internals, read to measure what is there.
import { instanceDir, liveRamPath } from '../src/fleet/vmm/vm.js';
import { loadAverages, log, median, parseIntOptions, ratio, round } from './lib.js';

const USAGE = `usage: node --import tsx bench/fleet.ts [--rounds N] [--memory-mib N] [--density-budget-mib N]
Cold start, start from the pool base and wake of one tiny fleet instance, its memory per state,
its sleep state's size; then instances started until --density-budget-mib of guest memory runs.
`;
const options = parseIntOptions(USAGE, {
  rounds: { default: 3 },
  'memory-mib': { default: 256, min: 64 },
  'density-budget-mib': { default: 2048, min: 64 },
});

/** The host's MemAvailable, in MiB: what the kernel could still hand out, page cache and shm counted. */
const memAvailableMiB = () =>
  Math.round(Number(/^MemAvailable:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]) / 1024);

/** Bytes a folder takes on disk (allocated blocks, so sparse files count what they hold). */
function diskBytes(path: string): number {
  const info = statSync(path);
  if (!info.isDirectory()) return info.blocks * 512;
  return readdirSync(path).reduce((total, name) => total + diskBytes(join(path, name)), info.blocks * 512);
}

if (options) {
  const dir = mkdtempSync('/tmp/vmkit-fleet-bench-');
  process.env.VMKIT_SNAPSHOT_DIR = join(dir, 'boot-cache');
  /** Runs `work` with the boot cache on (`true`) or off. */
  const withBootCache = async <T>(on: boolean, work: () => Promise<T>): Promise<T> => {
    process.env.VMKIT_BOOT_CACHE = on ? 'on' : 'off';
    try {
      return await work();
    } finally {
      delete process.env.VMKIT_BOOT_CACHE;
    }
  };
  const fleet = new Fleet({ dir, log });
  const path = 'bench/pool/one';
  const timed = async (work: () => Promise<unknown>) => {
    const start = performance.now();
    await work();
    return round(performance.now() - start);
  };
  const firstCommand = () => fleet.exec(path, ['true']);
  const cold: number[] = [];
  const coldCached: number[] = [];
  const coldBoot: number[] = [];
  const fromBase: number[] = [];
  const wake: number[] = [];
  const wakeOp: number[] = [];
  const firstAfterWake: number[] = [];
  const sleepMs: number[] = [];
  let runningMiB = 0;
  let warmMiB = 0;
  let sleepingMiB = 0;
  let sleepState: ReturnType<Fleet['instanceInfo']>['sleepState'];
  let wakeSteps = '';
  try {
    fleet.createTenant({ id: 'bench', subnet: '10.99.0.0/24' });
    await fleet.createPool({ tenant: 'bench', id: 'pool', memoryMiB: options['memory-mib'] });
    await fleet.createInstance('bench/pool', 'one');
    const invalidateBase = async () => {
      const rebuilt = await fleet.rebuildPool('bench/pool');
      if (!rebuilt.baseInvalidated)
        throw new Error('the base was not invalidated: the cold start would not be cold');
    };
    // Saves the pool's shape in the boot cache: the first base of a shape boots.
    await invalidateBase();
    await withBootCache(true, () => fleet.start(path));
    await fleet.stop(path);
    /** A start on a new base to the first command, the base copied from the boot cache or booted. */
    const coldStart = async (cached: boolean) => {
      await invalidateBase();
      return withBootCache(cached, () =>
        timed(async () => {
          await fleet.start(path);
          await firstCommand();
        }),
      );
    };
    for (let round = 0; round < options.rounds; round++) {
      coldCached.push(await coldStart(true));
      await fleet.stop(path);
      cold.push(await coldStart(false));
      const pool = fleet.store.pool('bench', 'pool');
      const booted = /booted in (\d+) ms|booted (\d+) ms/.exec(
        findBase(dir, pool, pool.revision)?.steps ?? '',
      );
      coldBoot.push(Number(booted?.[1] ?? booted?.[2] ?? Number.NaN));
      await fleet.stop(path);
      fromBase.push(
        await timed(async () => {
          await fleet.start(path);
          await firstCommand();
        }),
      );
      runningMiB = fleet.instanceInfo(fleet.instance(path)).hostMemoryMiB;
      await fleet.warm(path);
      warmMiB = fleet.instanceInfo(fleet.instance(path)).hostMemoryMiB;
      await fleet.resume(path);
      sleepMs.push(await timed(() => fleet.sleep(path)));
      const sleeping = fleet.instanceInfo(fleet.instance(path));
      sleepingMiB = sleeping.hostMemoryMiB;
      sleepState = sleeping.sleepState;
      wake.push(
        await timed(async () => {
          wakeOp.push(await timed(() => fleet.wake(path)));
          firstAfterWake.push(await timed(firstCommand));
        }),
      );
      wakeSteps =
        readAudit(dir, 'bench')
          .filter((event) => event.action === 'wake')
          .at(-1)?.detail ?? '';
      await fleet.stop(path);
      log(
        `round ${round + 1}: cold ${cold.at(-1)} ms, cold with the boot cache ${coldCached.at(-1)} ms, from base ${fromBase.at(-1)} ms, wake ${wake.at(-1)} ms`,
      );
    }
    // What a sleeping instance costs, as it is: its folder on disk, its RAM files, its processes.
    await fleet.start(path);
    await firstCommand();
    const beforeSleep = memAvailableMiB();
    await fleet.sleep(path);
    const sleepingInfo = fleet.instanceInfo(fleet.instance(path));
    const sleepingCost = {
      diskBytes: diskBytes(instanceDir(dir, sleepingInfo.seq)),
      liveRamFileExists: existsSync(liveRamPath(instanceDir(dir, sleepingInfo.seq))),
      vmmProcesses: sleepingInfo.vmmResidentMiB > 0 ? 1 : 0,
      memAvailableFreedBySleepMiB: memAvailableMiB() - beforeSleep,
    };
    // Density: start instances until the guest memory budget runs, then read what the host holds.
    const count = Math.max(1, Math.floor(options['density-budget-mib'] / options['memory-mib']));
    fleet.createTenant({
      id: 'dense',
      subnet: '10.98.0.0/24',
      maxMemoryMiB: count * options['memory-mib'],
      maxVcpus: count,
      maxRunning: count,
      maxInstances: count,
    });
    await fleet.createPool({ tenant: 'dense', id: 'pool', memoryMiB: options['memory-mib'] });
    await fleet.createInstance('dense/pool', 'first');
    await fleet.start('dense/pool/first'); // makes the pool's base, outside the measurement
    await fleet.exec('dense/pool/first', ['true']);
    await fleet.stop('dense/pool/first');
    const idleAvailable = memAvailableMiB();
    for (let n = 0; n < count; n++) {
      const id = n === 0 ? 'first' : `i${n}`;
      if (n > 0) await fleet.createInstance('dense/pool', id);
      await fleet.start(`dense/pool/${id}`);
      await fleet.exec(`dense/pool/${id}`, ['true']);
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const heldMiB = idleAvailable - memAvailableMiB();
    const perInstanceMiB = fleet.store
      .listInstances()
      .filter((instance) => instance.tenant === 'dense')
      .map((instance) => fleet.instanceInfo(instance).hostMemoryMiB);
    const density = {
      instances: count,
      guestMemoryMiB: count * options['memory-mib'],
      hostMemAvailableDropMiB: heldMiB,
      perInstanceHostMemoryMiB: median(perInstanceMiB),
      instancesPerHostGiB: heldMiB > 0 ? round((count * 1024) / heldMiB) : null,
      note: 'MemAvailable before and after starting them (RAM files in /dev/shm, QEMU, page cache all counted); other work on the host moves it too',
    };
    await fleet.destroyTenant('dense');
    const guestRamBytes = options['memory-mib'] * 2 ** 20;
    process.stdout.write(
      `${JSON.stringify(
        {
          benchmark: 'fleet',
          rounds: options.rounds,
          guestMemoryMiB: options['memory-mib'],
          coldStartToFirstCommandMs: median(cold),
          coldBootMs: median(coldBoot),
          coldStartBootCacheWarmMs: median(coldCached),
          coldStartBootCacheWarmOverCold: ratio(median(coldCached), median(cold)),
          startFromBaseToFirstCommandMs: median(fromBase),
          wakeToFirstCommandMs: median(wake),
          wakeOverColdStart: ratio(median(wake), median(cold)),
          wakeOverColdBoot: ratio(median(wake), median(coldBoot)),
          wakeTargetMet: median(wake) <= median(coldBoot) * 0.1,
          // Wake to first command, split: the wake operation (fleet.wake: records, secrets disk,
          // RAM file and QEMU, device state, guest set-up) and the first command on a new attachment.
          wakeOperationMs: median(wakeOp),
          firstCommandAfterWakeMs: median(firstAfterWake),
          lastWake: wakeSteps,
          sleepMs: median(sleepMs),
          // The VMM's own resident memory plus its guest RAM file's pages in /dev/shm.
          hostMemoryMiB: { running: runningMiB, warm: warmMiB, sleeping: sleepingMiB },
          density,
          sleepingInstance: sleepingCost,
          sleepState,
          sleepStateOverGuestRam: sleepState
            ? ratio(sleepState.ramDeltaBytes + sleepState.deviceStateBytes, guestRamBytes)
            : null,
          note: 'cold start: the pool base invalidated first and the boot cache off, so the start boots from the image, saves the base and restores from it; cold start with the boot cache warm: the new base is a copy of the entry of its shape; cold boot: the boot to the set-up guest alone; the sleep state is the RAM pages that differ from the base plus device state (the data disk stays in place)',
          loadAverage: loadAverages(),
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    await fleet.destroyTenant('bench').catch(() => {});
    await fleet.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

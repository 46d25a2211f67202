// Fleet benchmark: wake from sleep to first command against a cold start of the same instance,
// what a Running, Warm and Sleeping instance costs in host memory (and so how many fit in 8 GiB),
// and the sleep state's size against guest RAM. Prints one JSON object.
//
//   node --import tsx bench/fleet.ts [--rounds N] [--memory-mib N]

import { mkdtempSync, rmSync } from 'node:fs';
import { Fleet, instanceInfo } from 'vmkit';
import { loadAverages, log, median, parseIntOptions, ratio, round } from './lib.js';

const USAGE = `usage: node --import tsx bench/fleet.ts [--rounds N] [--memory-mib N]
Cold start vs wake of one tiny fleet instance, its memory per state, its sleep state's size.
`;
const options = parseIntOptions(USAGE, { rounds: { default: 3 }, 'memory-mib': { default: 256, min: 64 } });
if (options) {
  const dir = mkdtempSync('/tmp/vmkit-fleet-bench-');
  const fleet = new Fleet({ dir, log });
  const path = 'bench/pool/one';
  const timed = async (work: () => Promise<unknown>) => {
    const start = performance.now();
    await work();
    return round(performance.now() - start);
  };
  const firstCommand = () => fleet.exec(path, ['true']);
  const cold: number[] = [];
  const wake: number[] = [];
  const sleepMs: number[] = [];
  let runningMiB = 0;
  let warmMiB = 0;
  let sleepingMiB = 0;
  let stateBytes = 0;
  try {
    fleet.createTenant({ id: 'bench', subnet: '10.99.0.0/24' });
    await fleet.createPool({ tenant: 'bench', id: 'pool', memoryMiB: options['memory-mib'] });
    await fleet.createInstance('bench/pool', 'one');
    for (let round = 0; round < options.rounds; round++) {
      cold.push(
        await timed(async () => {
          await fleet.start(path);
          await firstCommand();
        }),
      );
      runningMiB = instanceInfo(fleet, fleet.instance(path)).vmmResidentMiB;
      await fleet.warm(path);
      warmMiB = instanceInfo(fleet, fleet.instance(path)).vmmResidentMiB;
      await fleet.resume(path);
      sleepMs.push(await timed(() => fleet.sleep(path)));
      const sleeping = instanceInfo(fleet, fleet.instance(path));
      sleepingMiB = sleeping.vmmResidentMiB;
      stateBytes = sleeping.sleepStateBytes;
      wake.push(
        await timed(async () => {
          await fleet.wake(path);
          await firstCommand();
        }),
      );
      await fleet.stop(path);
      log(`round ${round + 1}: cold ${cold.at(-1)} ms, wake ${wake.at(-1)} ms`);
    }
    const perInstance = (mib: number) => (mib > 0 ? Math.floor(8192 / mib) : null);
    process.stdout.write(
      `${JSON.stringify(
        {
          benchmark: 'fleet',
          rounds: options.rounds,
          guestMemoryMiB: options['memory-mib'],
          coldStartToFirstCommandMs: median(cold),
          wakeToFirstCommandMs: median(wake),
          wakeOverColdStart: ratio(median(wake), median(cold)),
          wakeTargetMet: median(wake) <= median(cold) * 0.1,
          sleepMs: median(sleepMs),
          vmmResidentMiB: { running: runningMiB, warm: warmMiB, sleeping: sleepingMiB },
          instancesIn8GiB: {
            running: perInstance(runningMiB),
            warm: perInstance(warmMiB),
            sleeping: 'unbounded by RAM (no VMM)',
          },
          sleepStateBytes: stateBytes,
          sleepStateOverGuestRam: ratio(stateBytes, options['memory-mib'] * 2 ** 20),
          note: 'the sleep state is a full migration stream (device state and every guest page in use), not a delta against a pool base',
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

// `vmkit up` of a new project VM, through the built CLI as a user runs it, side by side in one
// run: booted for real (`up --fresh`), the first up of its configuration with an empty boot cache
// (it boots, saves the entry, restores it), and ups from the warm cache; each up is a new VM
// (destroyed before the next) and includes what every up does after the start (mounting /work,
// the clean snapshot). For tiny and debian; the boot cache in a store of its own. Prints JSON.
//
//   npm run build && node --import tsx bench/project-up.ts [--rounds N]

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { processesNaming, stopDetached } from '../src/runtime/detached.js';
import { cliTimer, loadAverages, log, median, parseIntOptions, ratio } from './lib.js';

const USAGE = `usage: node --import tsx bench/project-up.ts [--rounds N]
vmkit up of a new VM: booted (--fresh), first through an empty boot cache, from the warm cache.
`;
const options = parseIntOptions(USAGE, { rounds: { default: 3, min: 1 } });

if (options) {
  const project = mkdtempSync('/tmp/vmkit-up-bench-');
  const store = join(project, 'store');
  const timedCli = (...args: string[]) => cliTimer(project, { VMKIT_SNAPSHOT_DIR: store })(...args).ms;
  /** One up of a new VM (destroyed first), in ms. */
  const newUp = (vm: string, ...flags: string[]) => {
    timedCli('destroy', vm, '--yes');
    const ms = timedCli('up', vm, ...flags);
    timedCli('down', vm);
    return ms;
  };
  try {
    writeFileSync(
      join(project, 'vmkit.config.json'),
      JSON.stringify({
        vms: {
          tiny: { image: 'tiny', memoryMiB: 256, diskMiB: 256, sync: [] },
          debian: { image: 'debian', memoryMiB: 256, diskMiB: 256, sync: [] },
        },
      }),
    );
    const results: Record<string, unknown> = {};
    for (const vm of ['tiny', 'debian']) {
      log(`${vm}: first up through an empty boot cache`);
      const firstCached = newUp(vm);
      const fresh: number[] = [];
      const cached: number[] = [];
      for (let round = 0; round < options.rounds; round++) {
        log(`${vm}: round ${round + 1}: up --fresh, then up from the cache`);
        fresh.push(newUp(vm, '--fresh'));
        cached.push(newUp(vm));
      }
      results[vm] = {
        upFreshMs: median(fresh),
        upFirstThroughEmptyCacheMs: firstCached,
        upFromCacheMs: median(cached),
        fromCacheOverFresh: ratio(median(cached), median(fresh)),
        runs: { fresh, cached },
      };
    }
    process.stdout.write(
      `${JSON.stringify({ rounds: options.rounds, ...results, loadAverages: loadAverages() }, null, 2)}\n`,
    );
  } finally {
    for (const leftover of processesNaming(project)) await stopDetached(leftover, 0);
    rmSync(project, { recursive: true, force: true });
  }
}

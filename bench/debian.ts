// The debian image: build time cold and cached, boot to multi-user.target, and restore of a
// booted snapshot to its first command, and starts from the boot cache to their first command and
// to multi-user.target, side by side in one run. Prints JSON on stdout.
// Targets: the cached build under 1 s; restore at most 5% of boot; a start from the boot cache to
// its first command at most 3% of the boot to multi-user.target (issue #22).
// Run: node --import tsx bench/debian.ts [--skip-cold 1] [--samples N]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage, restoreMachine, startMachine } from 'vmkit';
import {
  adoptMachine,
  closeMachine,
  environment,
  loadAverages,
  log,
  median,
  parseIntOptions,
  ratio,
  round,
  runBenchmark,
} from './lib.js';

const BOOT_TIMEOUT_MS = 300_000;

async function timed<T>(run: () => Promise<T>): Promise<[T, number]> {
  const began = performance.now();
  const value = await run();
  return [value, round(performance.now() - began)];
}

let coldCache: string | undefined;

await runBenchmark(
  async () => {
    const options = parseIntOptions(
      'usage: node --import tsx bench/debian.ts [--skip-cold 1] [--samples N]  (--skip-cold 1: no cold build, which takes a minute or more; --samples: starts from the boot cache, default 3)',
      { 'skip-cold': { default: 0, min: 0 }, samples: { default: 3, min: 1 } },
    );
    if (!options) return;
    const env = await environment();
    let buildColdMs: number | null = null;
    if (!options['skip-cold']) {
      // A cold build into a cache of its own, so that the real cache is left as it is.
      coldCache = await mkdtemp(join(tmpdir(), 'vmkit-bench-debian-'));
      const dir = coldCache;
      [, buildColdMs] = await timed(() => buildImage('debian', { cacheDir: dir, onProgress: log }));
      log(`cold build: ${buildColdMs} ms`);
    }
    await buildImage('debian', { onProgress: log }); // the real cache: built once if it is not
    const [image, buildCachedMs] = await timed(() => buildImage('debian'));
    log(`cached build: ${buildCachedMs} ms`);

    const [machine, bootToMultiUserMs] = await timed(async () => {
      const vm = adoptMachine(
        await startMachine({
          name: 'bench-debian',
          image: 'debian',
          fresh: true,
          timeoutMs: BOOT_TIMEOUT_MS,
        }),
      );
      await vm.waitForUnit('multi-user.target', { timeoutMs: BOOT_TIMEOUT_MS });
      return vm;
    });
    const backdoorMs = machine.readyMs;
    log(`boot: backdoor after ${backdoorMs} ms, multi-user.target after ${bootToMultiUserMs} ms`);
    const [snapshot, snapshotMs] = await timed(() => machine.snapshot());
    await closeMachine(machine);
    const [restoreToFirstCommandMs, clone] = await (async () => {
      const began = performance.now();
      const vm = adoptMachine(await restoreMachine(snapshot, { name: 'bench-restored' }));
      await vm.succeed('true');
      return [round(performance.now() - began), vm] as const;
    })();
    await clone.requireUnitState('multi-user.target'); // the booted guest, systemd and all
    await closeMachine(clone);
    await rm(snapshot.dir, { recursive: true, force: true });
    // The boot cache: a first start of the configuration fills it (if it is empty); the next is timed.
    const [seed, seedMs] = await timed(async () =>
      adoptMachine(await startMachine({ name: 'bench-seed', image: 'debian', timeoutMs: BOOT_TIMEOUT_MS })),
    );
    await closeMachine(seed);
    log(`boot cache: first start ${seedMs} ms (a boot and its save, unless the cache had it)`);
    // Each sample: startMachine() from the cache, its first command, then multi-user.target active.
    const toFirstCommand: number[] = [];
    const toMultiUser: number[] = [];
    for (let sample = 0; sample < options.samples; sample++) {
      const began = performance.now();
      const vm = adoptMachine(
        await startMachine({ name: `bench-cached-${sample}`, image: 'debian', timeoutMs: BOOT_TIMEOUT_MS }),
      );
      await vm.succeed('true');
      toFirstCommand.push(round(performance.now() - began));
      await vm.waitForUnit('multi-user.target', { timeoutMs: BOOT_TIMEOUT_MS });
      toMultiUser.push(round(performance.now() - began));
      await closeMachine(vm);
    }
    const cachedToFirstCommandMs = median(toFirstCommand);
    const cachedToMultiUserMs = median(toMultiUser);
    log(
      `boot cache: start to first command ${toFirstCommand.join(', ')} ms; to multi-user.target ${toMultiUser.join(', ')} ms`,
    );
    const report = {
      benchmark: 'debian',
      qemuVersion: env.qemuVersion,
      accel: env.accel.accel,
      imageKey: image.key,
      buildColdMs,
      buildCachedMs,
      bootToBackdoorMs: backdoorMs,
      bootToMultiUserMs,
      snapshotMs,
      restoreToFirstCommandMs,
      restoreOverBoot: ratio(restoreToFirstCommandMs, bootToMultiUserMs),
      cachedSamples: options.samples,
      /** startMachine() from the boot cache to its first command (median), against a boot. */
      cachedStartToFirstCommandMs: cachedToFirstCommandMs,
      cachedOverBoot: ratio(cachedToFirstCommandMs, bootToMultiUserMs),
      /** ... and until multi-user.target is active (the guest's own wait: a systemctl process). */
      cachedStartToMultiUserMs: cachedToMultiUserMs,
      cachedToMultiUserOverBoot: ratio(cachedToMultiUserMs, bootToMultiUserMs),
      targets: {
        cachedBuildUnder1s: buildCachedMs < 1000,
        restoreAtMost5PercentOfBoot: restoreToFirstCommandMs <= 0.05 * bootToMultiUserMs,
        cachedStartAtMost3PercentOfBoot: cachedToFirstCommandMs <= 0.03 * bootToMultiUserMs,
      },
      loadAverages: loadAverages(),
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  },
  async () => {
    if (coldCache) await rm(coldCache, { recursive: true, force: true });
  },
);

// Builder VMs: one recipe built three ways side by side in one run, each with a recipe of its own
// (so none is an image-cache hit): the builder booted (the boot cache off), the builder started
// from a boot cache entry made by this run's first cached build (its cost: boot, settle, save),
// and from that entry again (a restore). Prints JSON on stdout.
// Target: a warm build's builder start at most 0.1 of a booted one.
// Run: node --import tsx bench/builder.ts
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildInVm } from '../src/builder/vm-builder.js';
import { environment, log, ratio, round, runBenchmark } from './lib.js';

/** A recipe no earlier run built: a file with this run's nonce, and a step that reads it. */
const recipe = (nonce: string) => ({
  base: 'debian' as const,
  name: `bench-${nonce}`.slice(0, 32),
  files: { '/etc/vmkit-bench.txt': `${nonce}\n` },
  run: ['cat /etc/vmkit-bench.txt > /etc/vmkit-bench-run.txt'],
});

interface BuildTiming {
  buildMs: number;
  /** From "starting the builder VM" to "builder VM up": the part the boot cache changes. */
  builderUpMs: number;
}

async function timedBuild(nonce: string, built: string[]): Promise<BuildTiming> {
  let startedAt = 0;
  let upAt = 0;
  const began = performance.now();
  const image = await buildInVm(recipe(nonce), {
    onProgress: (line) => {
      log(line);
      if (line.startsWith('starting the builder VM')) startedAt = performance.now();
      if (line.startsWith('builder VM up')) upAt = performance.now();
    },
  });
  built.push(image.dir);
  return { buildMs: round(performance.now() - began), builderUpMs: round(upAt - startedAt) };
}

const built: string[] = [];
let snapshots: string | undefined;

await runBenchmark(
  async () => {
    const env = await environment();
    // A boot cache of its own, empty at the start, so that "cold" is cold whatever the real one holds.
    snapshots = await mkdtemp(join(tmpdir(), 'vmkit-bench-builder-'));
    process.env.VMKIT_SNAPSHOT_DIR = snapshots;
    const nonce = Date.now().toString(36);
    process.env.VMKIT_BOOT_CACHE = 'off';
    const booted = await timedBuild(`${nonce}-boot`, built);
    delete process.env.VMKIT_BOOT_CACHE;
    const cold = await timedBuild(`${nonce}-cold`, built);
    const warm = await timedBuild(`${nonce}-warm`, built);
    process.stdout.write(
      `${JSON.stringify(
        {
          benchmark: 'builder',
          env,
          booted,
          cacheCold: cold,
          cacheWarm: warm,
          warmBuilderUpOverBooted: ratio(warm.builderUpMs, booted.builderUpMs),
          warmBuildOverBooted: ratio(warm.buildMs, booted.buildMs),
          coldBuildOverBooted: ratio(cold.buildMs, booted.buildMs),
        },
        null,
        2,
      )}\n`,
    );
  },
  async () => {
    for (const dir of built) await rm(dir, { recursive: true, force: true });
    if (snapshots) await rm(snapshots, { recursive: true, force: true });
  },
);

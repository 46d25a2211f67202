import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backendNamed } from '../backends/index.js';
import { ImageError, tail } from '../errors.js';
import { type BuildImageOptions, buildImage, buildRecipe } from '../images/build.js';
import type { DebianInputs } from '../images/debian-image.js';
import { type ImageRecipe, parseRecipe, type ResolvedRecipe, recipeScripts } from '../images/recipe.js';
import type { BootImage, ImageManifest } from '../images/types.js';
import type { ExtraDisk } from '../machine/extra-disks.js';
import type { Machine } from '../machine/machine.js';
import { startMachine } from '../machines.js';
import { runTool } from '../util/exec.js';
import { ensureDir } from '../util/files.js';
import { guestFilesDir } from '../util/paths.js';
import { createQcow2 } from '../util/qcow2.js';
import { shellQuote } from '../util/shell.js';
import { fetchRecipePackages } from './packages.js';

export interface VmBuildOptions extends BuildImageOptions {
  /** How long the recipe's steps may run inside the builder VM (default 30 min). */
  buildTimeoutMs?: number;
  /** How long the builder VM may take to boot (default 10 min: TCG on a busy host). */
  bootTimeoutMs?: number;
}

/** Lines of the builder's output kept in an error. */
const OUTPUT_TAIL_CHARS = 3000;

/**
 * Builds a recipe's image inside an ephemeral builder VM, so that neither the packages' scripts
 * nor the recipe's `run` steps ever run on the host, and no root is needed:
 *
 * - the base `debian` image (from the cache) boots as the builder;
 * - the target is a copy-on-write overlay of that image's root disk, attached as a second disk;
 * - a transfer disk (ext4 made by `mke2fs -d`, read-only in the guest) carries the .deb files the
 *   host fetched, the recipe's files and its scripts;
 * - inside, guest/builder/build.sh installs, writes and runs chrooted into the target, then
 *   unmounts it and the builder powers off;
 * - the host flattens the target into the image store, under the key a host build would have.
 *
 * The builder VM ends on success, failure, timeout and signals (the runtime's reaper); a failure
 * carries the tail of the builder's output.
 */
export function buildInVm(
  image: ImageRecipe | ResolvedRecipe,
  options: VmBuildOptions = {},
): Promise<BootImage> {
  const recipe = parseRecipe(image);
  const { buildTimeoutMs, bootTimeoutMs, ...buildOptions } = options;
  return buildRecipe(recipe, buildOptions, async (inputs, key, scratch, debsDir, progress) => {
    const base = await buildImage('debian', { ...buildOptions, onProgress: progress });
    const work = await mkdtemp(join(scratch, 'vm-'));
    try {
      return await buildOnBase(base, recipe, inputs, key, { scratch, work, debsDir }, progress, {
        build: buildTimeoutMs ?? 30 * 60_000,
        boot: bootTimeoutMs ?? 10 * 60_000,
        runtime: buildOptions.runtime,
      });
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
}

interface Folders {
  scratch: string;
  work: string;
  debsDir: string;
}

async function buildOnBase(
  base: BootImage,
  recipe: ResolvedRecipe,
  inputs: DebianInputs,
  key: string,
  folders: Folders,
  progress: (line: string) => void,
  limits: { build: number; boot: number; runtime: BuildImageOptions['runtime'] },
): Promise<ImageManifest> {
  if (!base.disk) throw new ImageError(`the base image ${base.name} has no root disk to build on`);
  const { scratch, work, debsDir } = folders;
  const debs = await fetchRecipePackages(base, recipe.packages, work, debsDir, progress);
  const transfer = await makeTransferDisk(recipe, debs, work);
  const target = join(work, 'target.qcow2');
  await createQcow2(target, { base: base.disk });
  // Found inside by their serials; the root disk stays /dev/vda.
  const disks: ExtraDisk[] = [
    { path: target, format: 'qcow2', serial: 'vmkit-target' },
    { path: transfer, format: 'raw', readOnly: true, serial: 'vmkit-transfer' },
  ];
  // Attached once it runs, the builder is a plain machine of the base image: the boot cache
  // starts it from a saved boot (booted once per base image and memory size) instead of booting.
  const hotplug = backendNamed().capabilities.diskHotplug;
  progress(`starting the builder VM (${base.name} ${base.key.slice(0, 12)})`);
  const started = performance.now();
  {
    await using builder = await startMachine({
      name: 'vmkit-builder',
      image: base,
      memoryMiB: 512,
      timeoutMs: limits.boot,
      commandTimeoutMs: limits.build,
      ...(limits.runtime ? { runtime: limits.runtime } : {}),
      ...(hotplug ? {} : { extraDisks: disks }),
      log: (line) => {
        if (/^(boot cache|started from the boot cache|attached disk)/.test(line))
          progress(`builder VM: ${line}`);
      },
    });
    // One at a time: the guest takes hotplug events in turn anyway (measured: no faster together).
    if (hotplug) for (const disk of disks) await builder.attachDisk(disk, { timeoutMs: 60_000 });
    progress(`builder VM up in ${((performance.now() - started) / 1000).toFixed(1)} s; applying the recipe`);
    await runBuild(builder, recipe.name, limits.build);
    await builder.shutdown({ timeoutMs: 120_000 });
  }
  progress('flattening the target disk into the image store');
  await runTool('qemu-img', ['convert', '-O', 'qcow2', target, join(scratch, 'root.qcow2')], {
    timeoutMs: 600_000,
  });
  await cp(base.kernel, join(scratch, 'vmlinuz'));
  await cp(base.initrd, join(scratch, 'initrd.cpio'));
  const baseManifest = JSON.parse(await readFile(join(base.dir, 'manifest.json'), 'utf8')) as ImageManifest;
  return {
    ...baseManifest,
    name: inputs.name,
    key,
    kernel: 'vmlinuz',
    initrd: 'initrd.cpio',
    disk: 'root.qcow2',
    packages: [`${inputs.kernel.name}=${inputs.kernel.version}`, ...inputs.packages],
    builtAt: new Date().toISOString(),
    builder: 'vm',
  };
}

/** The transfer disk: debs/, files/<n>, files.sh and run.sh, as ext4 made without mounting. */
async function makeTransferDisk(recipe: ResolvedRecipe, debs: string[], work: string): Promise<string> {
  const tree = join(work, 'transfer');
  await ensureDir(join(tree, 'debs'));
  await ensureDir(join(tree, 'files'));
  const scripts = recipeScripts(recipe);
  for (const [index, text] of scripts.files.entries())
    await writeFile(join(tree, 'files', String(index)), text);
  await writeFile(join(tree, 'files.sh'), scripts.filesSh);
  await writeFile(join(tree, 'run.sh'), scripts.runSh);
  for (const deb of debs) await cp(deb, join(tree, 'debs', deb.split('/').pop() as string));
  const usedMiB = Number((await runTool('du', ['-sm', tree])).stdout.split('\t')[0]);
  const disk = join(work, 'transfer.raw');
  await writeFile(disk, '');
  await runTool('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, disk, `${usedMiB * 2 + 16}M`], {
    timeoutMs: 300_000,
  });
  return disk;
}

/** Runs guest/builder/build.sh in the builder (its text: the script mounts the disks it reads from). */
async function runBuild(builder: Machine, name: string, timeoutMs: number): Promise<void> {
  const script = await readFile(join(guestFilesDir(), 'builder', 'build.sh'), 'utf8');
  const result = await builder.execute(`sh -c ${shellQuote(script)} vmkit-build 2>&1`, { timeoutMs });
  if (result.exitCode !== 0) {
    const output = tail(result.stdout + result.stderr, OUTPUT_TAIL_CHARS).trimEnd();
    throw new ImageError(
      `building image ${name} in a builder VM failed: the build exited with status ${result.exitCode}\nbuilder output tail:\n${output
        .split('\n')
        .map((line) => `  | ${line}`)
        .join('\n')}`,
    );
  }
}

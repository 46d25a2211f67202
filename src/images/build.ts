import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError, describeValue, ImageError } from '../errors.js';
import { defaultRuntime, Runtime } from '../runtime/runtime.js';
import { cacheDir } from '../util/paths.js';
import { ensurePrivateDir, PRIVATE_FILE } from '../util/private.js';
import { instanceOf, lineCallback, parseInput } from '../util/validate.js';
import { buildDebian, type DebianInputs, debianInputs } from './debian-image.js';
import { type ImageRecipe, parseRecipe, type ResolvedRecipe } from './recipe.js';
import { ContentStore } from './store.js';
import { buildTiny, tinyInputs } from './tiny.js';
import type { BootImage, ImageManifest } from './types.js';

export type { ImageRecipe } from './recipe.js';
export type { BootImage, ImageManifest } from './types.js';

export const IMAGE_NAMES = ['tiny', 'debian'] as const;
export type ImageName = (typeof IMAGE_NAMES)[number];

const buildOptions = z
  .object({
    onProgress: lineCallback.optional(),
    cacheDir: z.string({ error: 'must be a path' }).min(1).optional(),
    runtime: instanceOf(Runtime, 'Runtime').optional(),
  })
  .strict();

export interface BuildImageOptions {
  /** Called with one line per step of a long build. */
  onProgress?: (line: string) => void;
  /** Defaults to $VMKIT_CACHE_DIR or the XDG cache dir. */
  cacheDir?: string;
  /** Machines of one runtime starting together share one build. */
  runtime?: Runtime;
}

/**
 * Returns the named image, or the image a recipe describes, building it from Debian packages
 * when its inputs changed or it was never built. Cheap when cached: the inputs are looked up in
 * apt's lists and hashed.
 */
export async function buildImage(
  image: string | ImageRecipe,
  options: BuildImageOptions = {},
): Promise<BootImage> {
  if (typeof image !== 'string' && (typeof image !== 'object' || image === null)) {
    throw new ConfigError(
      `buildImage: expected an image name (${IMAGE_NAMES.join(', ')}) or a recipe like { base: 'debian', packages }, not ${describeValue(image)}`,
    );
  }
  if (typeof image === 'string' && !(IMAGE_NAMES as readonly string[]).includes(image)) {
    throw new ConfigError(`unknown image "${image}" (known images: ${IMAGE_NAMES.join(', ')})`);
  }
  options = parseInput(buildOptions, options, 'buildImage options');
  const recipe =
    image === 'debian'
      ? parseRecipe({ base: 'debian' })
      : typeof image === 'string'
        ? undefined
        : parseRecipe(image);
  if (!recipe) return shareBuild('tiny', options, () => buildOrReuse('tiny', options, tinyBuilder));
  return buildRecipe(recipe, options, (inputs, key, scratch, debsDir, progress) =>
    buildDebian(inputs, recipe, key, scratch, debsDir, progress),
  );
}

/** Builds the image of a Debian recipe; `build` makes it when not cached (on the host, or in a builder VM). */
export type RecipeBuild = (
  inputs: DebianInputs,
  key: string,
  scratch: string,
  debsDir: string,
  progress: (line: string) => void,
) => Promise<ImageManifest>;

/**
 * The image of a checked recipe under its content key (the hash of everything it is made of, the
 * same whichever way it is built), made by `build` when it is not in the store yet.
 */
export function buildRecipe(
  recipe: ResolvedRecipe,
  options: BuildImageOptions,
  build: RecipeBuild,
): Promise<BootImage> {
  options = parseInput(buildOptions, options, 'buildImage options');
  return shareBuild(JSON.stringify(recipe), options, () =>
    buildOrReuse(recipe.name, options, {
      inputs: (memoFile) => debianInputs(recipe, memoFile),
      build,
    }),
  );
}

/** Machines of one runtime asking for the same image at once share one build. */
function shareBuild(
  id: string,
  options: BuildImageOptions,
  run: () => Promise<BootImage>,
): Promise<BootImage> {
  const runtime = options.runtime ?? defaultRuntime();
  return runtime.shared(`image:${options.cacheDir ?? cacheDir()}\0${id}`, run);
}

/** How one kind of image is made: its inputs (hashed into the key) and the build. */
interface Builder<I> {
  inputs(memoFile: string): Promise<I>;
  build(
    inputs: I,
    key: string,
    scratch: string,
    debsDir: string,
    progress: (line: string) => void,
  ): Promise<ImageManifest>;
}

const tinyBuilder: Builder<Awaited<ReturnType<typeof tinyInputs>>> = { inputs: tinyInputs, build: buildTiny };

async function buildOrReuse<I>(
  name: string,
  options: BuildImageOptions,
  builder: Builder<I>,
): Promise<BootImage> {
  const progress = options.onProgress ?? (() => {});
  const root = options.cacheDir ?? cacheDir();
  const store = new ContentStore(join(root, 'images'));
  let inputs: I;
  try {
    inputs = await builder.inputs(join(root, 'refs', 'apt-resolved.json'));
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    // Without apt's lists the inputs cannot be resolved; the last build still boots.
    const fallback = await lastBuilt(root, name, store);
    if (!fallback) {
      if (error instanceof ImageError) throw error;
      throw new ImageError(`cannot resolve the packages of image ${name}: ${(error as Error).message}`);
    }
    progress(`${(error as Error).message.split('\n')[0]}; using the last built ${name} image`);
    return fallback;
  }
  const key = ContentStore.key(inputs);
  const manifest = await store.ensure<ImageManifest>(key, async (scratch) => {
    progress(`building image ${name} (${key.slice(0, 12)})`);
    const started = performance.now();
    try {
      const built = await builder.build(inputs, key, scratch, join(root, 'debs'), progress);
      const buildMs = Math.round(performance.now() - started);
      progress(
        `built image ${name} in ${(buildMs / 1000).toFixed(1)} s${built.builder === 'vm' ? ' in a builder VM' : ''}`,
      );
      return { ...built, builder: built.builder ?? 'host', buildMs };
    } catch (error) {
      if (error instanceof ImageError || error instanceof ConfigError) throw error;
      throw new ImageError(`building image ${name} failed: ${(error as Error).message}`);
    }
  });
  ensurePrivateDir(join(root, 'refs'));
  await writeFile(join(root, 'refs', name), key, { mode: PRIVATE_FILE });
  return toBootImage(manifest, store.pathOf(key));
}

/** Images present in the cache, newest first. */
export async function listImages(options: { cacheDir?: string } = {}): Promise<BootImage[]> {
  const store = new ContentStore(join(options.cacheDir ?? cacheDir(), 'images'));
  const keys = await readdir(store.root).catch(() => [] as string[]);
  const images: BootImage[] = [];
  for (const key of keys.filter((k) => !k.startsWith('.'))) {
    const manifest = await store.manifest<ImageManifest>(key);
    if (manifest) images.push(toBootImage(manifest, store.pathOf(key)));
  }
  return images;
}

async function lastBuilt(root: string, name: string, store: ContentStore): Promise<BootImage | undefined> {
  const key = await readFile(join(root, 'refs', name), 'utf8').catch(() => undefined);
  const manifest = key ? await store.manifest<ImageManifest>(key.trim()) : undefined;
  return manifest ? toBootImage(manifest, store.pathOf(manifest.key)) : undefined;
}

function toBootImage(manifest: ImageManifest, dir: string): BootImage {
  if (!manifest.kernel || !manifest.initrd) throw new ImageError(`image manifest in ${dir} is incomplete`);
  return {
    name: manifest.name,
    key: manifest.key,
    dir,
    kernel: join(dir, manifest.kernel),
    initrd: join(dir, manifest.initrd),
    ...(manifest.disk ? { disk: join(dir, manifest.disk), diskSizeMiB: manifest.diskSizeMiB } : {}),
    cmdline: manifest.cmdline,
    kernelRelease: manifest.kernelRelease,
    profile: manifest.profile ?? manifest.name,
    builtAt: manifest.builtAt,
    ...(manifest.builder ? { builder: manifest.builder } : {}),
    ...(manifest.buildMs !== undefined ? { buildMs: manifest.buildMs } : {}),
  };
}

import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError, describeValue, ImageError } from '../errors.js';
import { defaultRuntime, Runtime } from '../runtime/runtime.js';
import { ensureDir } from '../util/files.js';
import { cacheDir } from '../util/paths.js';
import { instanceOf, lineCallback, parseInput } from '../util/validate.js';
import { ContentStore } from './store.js';
import { buildTiny, tinyInputs } from './tiny.js';
import type { BootImage, ImageManifest } from './types.js';

export type { BootImage, ImageManifest } from './types.js';

export const IMAGE_NAMES = ['tiny'] as const;
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
 * Returns the named image, building it from Debian packages when its inputs changed or it was
 * never built. Cheap when cached: the inputs are looked up in apt's lists and hashed.
 */
export async function buildImage(name: string, options: BuildImageOptions = {}): Promise<BootImage> {
  if (typeof name !== 'string') {
    throw new ConfigError(
      `buildImage: name must be an image name (${IMAGE_NAMES.join(', ')}), not ${describeValue(name)}`,
    );
  }
  options = parseInput(buildOptions, options, 'buildImage options');
  const runtime = options.runtime ?? defaultRuntime();
  return runtime.shared(`image:${options.cacheDir ?? cacheDir()}\0${name}`, () =>
    buildOrReuse(name, options),
  );
}

async function buildOrReuse(name: string, options: BuildImageOptions): Promise<BootImage> {
  if (!(IMAGE_NAMES as readonly string[]).includes(name)) {
    throw new ConfigError(`unknown image "${name}" (known images: ${IMAGE_NAMES.join(', ')})`);
  }
  const progress = options.onProgress ?? (() => {});
  const root = options.cacheDir ?? cacheDir();
  const store = new ContentStore(join(root, 'images'));
  let inputs: Awaited<ReturnType<typeof tinyInputs>>;
  try {
    inputs = await tinyInputs(join(root, 'refs', 'apt-resolved.json'));
  } catch (error) {
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
    try {
      return await buildTiny(inputs, key, scratch, join(root, 'debs'), progress);
    } catch (error) {
      if (error instanceof ImageError) throw error;
      throw new ImageError(`building image ${name} failed: ${(error as Error).message}`);
    }
  });
  await ensureDir(join(root, 'refs'));
  await writeFile(join(root, 'refs', name), key);
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
    cmdline: manifest.cmdline,
    kernelRelease: manifest.kernelRelease,
    profile: manifest.profile ?? manifest.name,
  };
}

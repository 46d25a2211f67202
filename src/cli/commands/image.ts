import { readFile } from 'node:fs/promises';
import { ConfigError } from '../../errors.js';
import { buildImage, type ImageRecipe, listImages } from '../../images/build.js';
import { Runtime } from '../../runtime/runtime.js';

/** A recipe file: JSON, checked by buildImage like any recipe. */
async function readRecipe(path: string): Promise<ImageRecipe> {
  const text = await readFile(path, 'utf8').catch((error: Error) => {
    throw new ConfigError(`cannot read recipe ${path}: ${error.message}`);
  });
  try {
    return JSON.parse(text) as ImageRecipe;
  } catch (error) {
    throw new ConfigError(`recipe ${path} is not JSON: ${(error as Error).message}`);
  }
}

export async function buildImageCommand(name: string): Promise<void> {
  const started = performance.now();
  const what = name.endsWith('.json') ? await readRecipe(name) : name;
  await using runtime = new Runtime();
  const image = await buildImage(what, {
    runtime,
    onProgress: (line) => process.stderr.write(`vmkit: ${line}\n`),
  });
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  process.stdout.write(
    `${image.name} ${image.key} (kernel ${image.kernelRelease}) in ${image.dir} [${seconds} s]\n`,
  );
}

export async function listImagesCommand(): Promise<void> {
  const images = await listImages();
  if (images.length === 0)
    process.stdout.write('no images cached (build one with: vmkit image build tiny)\n');
  for (const image of images)
    process.stdout.write(`${image.name}\t${image.key}\tkernel ${image.kernelRelease}\t${image.dir}\n`);
}

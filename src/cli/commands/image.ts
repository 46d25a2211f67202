import { buildImage, listImages } from '../../images/build.js';

export async function buildImageCommand(name: string): Promise<void> {
  const started = performance.now();
  const image = await buildImage(name, { onProgress: (line) => process.stderr.write(`vmkit: ${line}\n`) });
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

import { runTool } from './exec.js';

/**
 * Creates a qcow2 image: blank of `sizeMiB`, or a copy-on-write overlay on `base` (whose format
 * is `baseFormat`, qcow2 unless said), as large as the base unless `sizeMiB` is given.
 */
export async function createQcow2(
  path: string,
  options: { sizeMiB?: number; base?: string; baseFormat?: string },
): Promise<void> {
  const base = options.base ? ['-F', options.baseFormat ?? 'qcow2', '-b', options.base] : [];
  const size = options.sizeMiB !== undefined ? [`${options.sizeMiB}M`] : [];
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', ...base, path, ...size]);
}

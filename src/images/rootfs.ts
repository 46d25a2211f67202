import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { rootlessBuildProblems } from './rootless.js';

/**
 * How mmdebstrap runs: `root` as root (chroot), `unshare` as an ordinary account (an unprivileged
 * user namespace with the account's subordinate ids). Measured here for the `debian` image
 * (254 MiB of files): the unshare build takes about 6 s more, for writing the tree as a tar and
 * unpacking it under fakeroot.
 */
export type BuildMode = 'root' | 'unshare';

/** Room for what tests write and install, beyond what the image holds; the qcow2 stays sparse. */
const FREE_SPACE_MIB = 2048;

export async function chooseBuildMode(): Promise<BuildMode> {
  await runTool('mmdebstrap', ['--version'], { timeoutMs: 30_000 }).catch((error: Error) => {
    throw new ImageError(`mmdebstrap is needed to build Debian images: ${error.message.split('\n')[0]}`);
  });
  if (process.getuid?.() === 0) return 'root';
  const problems = await rootlessBuildProblems();
  if (problems.length > 0) {
    throw new ImageError(
      `building a Debian image without root needs unprivileged user namespaces, and here:\n  ${problems.join('\n  ')}`,
    );
  }
  return 'unshare';
}

export interface RootImage {
  raw: string;
  sizeMiB: number;
  usedMiB: number;
}

/**
 * Runs mmdebstrap (its arguments less mode, format and target) and makes an ext4 image of the
 * tree with `mke2fs -d`, nothing mounted. As root the tree is a folder. Without root, its files
 * belong to subordinate ids this account cannot read as owner, so mmdebstrap writes a tar from
 * inside its namespace instead; fakeroot unpacks it and tells mke2fs the owners, modes and
 * device nodes that the tar holds.
 */
export async function makeRootImage(
  mode: BuildMode,
  mmdebstrapArgs: string[],
  work: string,
  progress: (line: string) => void,
): Promise<RootImage> {
  const tree = join(work, 'root');
  const tar = join(work, 'root.tar');
  const fakerootState = join(work, 'fakeroot.state');
  const format = mode === 'root' ? ['--format=directory'] : ['--format=tar'];
  await step('mmdebstrap', () =>
    runTool('mmdebstrap', [`--mode=${mode}`, ...format, ...mmdebstrapArgs, mode === 'root' ? tree : tar], {
      timeoutMs: 30 * 60_000,
      onStderrLine: (line) => {
        if (/^I: (running apt|downloading|installing|extracting|success)/.test(line)) progress(line.slice(3));
      },
    }).catch((error: Error) => {
      if (!/Version '[^']*' for '[^']*' was not found/.test(error.message)) throw error;
      throw new ImageError(
        `${error.message}\nThe host's package lists name versions the archive no longer serves: run sudo apt-get update, then build again.`,
      );
    }),
  );
  if (mode === 'unshare') {
    progress('unpacking the root filesystem under fakeroot');
    await step('unpacking the tree', async () => {
      await mkdir(tree);
      await runTool(
        'fakeroot',
        ['-s', fakerootState, '--', 'tar', '-C', tree, '--numeric-owner', '-xpf', tar],
        {
          timeoutMs: 600_000,
        },
      );
      await rm(tar, { force: true });
    });
  }
  const usedMiB = Number((await runTool('du', ['-sm', tree])).stdout.split('\t')[0]);
  const sizeMiB = Math.ceil(usedMiB * 1.2) + FREE_SPACE_MIB;
  const raw = join(work, 'root.raw');
  progress(`making the ext4 root filesystem: ${sizeMiB} MiB for ${usedMiB} MiB of files`);
  await step('mke2fs', async () => {
    await writeFile(raw, '');
    const args = ['-q', '-F', '-t', 'ext4', '-m', '0', '-L', 'vmkit-root', '-d', tree, raw, `${sizeMiB}M`];
    if (mode === 'root') await runTool('mke2fs', args, { timeoutMs: 600_000 });
    else await runTool('fakeroot', ['-i', fakerootState, '--', 'mke2fs', ...args], { timeoutMs: 600_000 });
  });
  await rm(tree, { recursive: true, force: true });
  return { raw, sizeMiB, usedMiB };
}

async function step<T>(name: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw new ImageError(`${name}: ${(error as Error).message}`);
  }
}

import { copyFile, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { ensureDir } from '../util/files.js';
import { guestFilesDir } from '../util/paths.js';
import { type CpioEntry, writeCpio } from './cpio.js';
import { type DebianPackage, extractDeb, fetchDeb, pinnedDependency, resolvePackages } from './debian.js';
import { loadOrder, readModulesDep } from './modules.js';
import type { ImageManifest } from './types.js';

const RECIPE_VERSION = 1;
const KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
const BUSYBOX_PACKAGE = 'busybox-static';
/** What the tiny image needs from the kernel: PCI and MMIO virtio transports, consoles, net, disks, entropy. */
const MODULES = ['virtio_pci', 'virtio_mmio', 'virtio_console', 'virtio_net', 'virtio_blk', 'virtio_rng'];
const GUEST_FILES = ['inittab', 'rc.sh', 'backdoor.sh'];
const CMDLINE = 'console=ttyS0 panic=-1 quiet rdinit=/sbin/init i8042.noaux i8042.nokbd';

export interface TinyInputs {
  recipe: number;
  kernel: DebianPackage;
  busybox: DebianPackage;
  modules: string[];
  cmdline: string;
  guestFiles: Record<string, string>;
}

/** Everything the tiny image is made of; its hash is the image's key. */
export async function tinyInputs(memoFile?: string): Promise<TinyInputs> {
  const packages = await resolvePackages([KERNEL_METAPACKAGE, BUSYBOX_PACKAGE], memoFile);
  const kernel = pinnedDependency(packages.get(KERNEL_METAPACKAGE) as DebianPackage, 'linux-image-');
  const busybox = packages.get(BUSYBOX_PACKAGE) as DebianPackage;
  const guestFiles: Record<string, string> = {};
  for (const file of GUEST_FILES)
    guestFiles[file] = await readFile(join(guestFilesDir(), 'tiny', file), 'utf8');
  return { recipe: RECIPE_VERSION, kernel, busybox, modules: MODULES, cmdline: CMDLINE, guestFiles };
}

/** Builds the tiny image into `scratch`: the Debian cloud kernel and a busybox initramfs. */
export async function buildTiny(
  inputs: TinyInputs,
  key: string,
  scratch: string,
  debsDir: string,
  progress: (line: string) => void,
): Promise<ImageManifest> {
  await ensureDir(debsDir);
  const [kernelDeb, busyboxDeb] = await Promise.all([
    fetchDeb(inputs.kernel, debsDir, progress),
    fetchDeb(inputs.busybox, debsDir, progress),
  ]);
  const unpacked = await mkdtemp(join(scratch, 'unpacked-'));
  try {
    progress(`unpacking ${inputs.kernel.name}`);
    await extractDeb(kernelDeb, join(unpacked, 'kernel'));
    await extractDeb(busyboxDeb, join(unpacked, 'busybox'));

    const kernelRoot = join(unpacked, 'kernel');
    const [kernelRelease] = await readdir(join(kernelRoot, 'lib', 'modules'));
    if (!kernelRelease) throw new ImageError(`${inputs.kernel.name} holds no /lib/modules`);
    // Debian generates modules.dep at install time, so the package does not ship it.
    progress(`resolving modules for ${kernelRelease}`);
    await runTool('depmod', ['-b', kernelRoot, kernelRelease], { timeoutMs: 120_000 }).catch(
      (error: Error) => {
        throw new ImageError(`depmod failed (is the kmod package installed?): ${error.message}`);
      },
    );
    const modulesDir = join(kernelRoot, 'lib', 'modules', kernelRelease);
    const modulePaths = loadOrder(await readModulesDep(modulesDir), inputs.modules);

    progress('writing initramfs');
    const entries: CpioEntry[] = [];
    for (const dir of [
      'bin',
      'sbin',
      'usr',
      'usr/bin',
      'usr/sbin',
      'etc',
      'etc/vmkit',
      'proc',
      'sys',
      'dev',
      'run',
      'tmp',
      'root',
      'lib',
      'lib/modules',
    ]) {
      entries.push({ type: 'dir', path: dir });
    }
    entries.push({
      type: 'file',
      path: 'bin/busybox',
      data: await readFile(join(unpacked, 'busybox', 'bin', 'busybox')),
      mode: 0o755,
    });
    entries.push({ type: 'symlink', path: 'bin/sh', target: 'busybox' });
    entries.push({ type: 'symlink', path: 'sbin/init', target: '../bin/busybox' });
    entries.push({ type: 'file', path: 'etc/inittab', data: Buffer.from(inputs.guestFiles.inittab ?? '') });
    for (const script of ['rc.sh', 'backdoor.sh']) {
      entries.push({
        type: 'file',
        path: `etc/vmkit/${script}`,
        data: Buffer.from(inputs.guestFiles[script] ?? ''),
        mode: 0o755,
      });
    }
    entries.push({
      type: 'file',
      path: 'etc/vmkit/modules',
      data: Buffer.from(modulePaths.map((p) => `${p}\n`).join('')),
    });
    entries.push({ type: 'file', path: 'etc/passwd', data: Buffer.from('root:x:0:0:root:/root:/bin/sh\n') });
    entries.push({ type: 'file', path: 'etc/group', data: Buffer.from('root:x:0:\n') });
    const moduleDirs = new Set<string>();
    for (const path of modulePaths) {
      const parts = path.split('/');
      for (let i = 1; i < parts.length; i++) moduleDirs.add(parts.slice(0, i).join('/'));
    }
    for (const dir of [...moduleDirs].sort()) entries.push({ type: 'dir', path: `lib/modules/${dir}` });
    for (const path of modulePaths) {
      entries.push({
        type: 'file',
        path: `lib/modules/${path}`,
        data: await readFile(join(modulesDir, path)),
      });
    }
    await writeCpio(join(scratch, 'initrd.cpio'), entries);
    await copyFile(join(kernelRoot, 'boot', `vmlinuz-${kernelRelease}`), join(scratch, 'vmlinuz'));
    return {
      name: 'tiny',
      key,
      kernel: 'vmlinuz',
      initrd: 'initrd.cpio',
      cmdline: inputs.cmdline,
      kernelRelease,
      packages: [inputs.kernel, inputs.busybox].map((p) => `${p.name}=${p.version}`),
      modules: modulePaths,
      profile: 'tiny',
      builtAt: new Date().toISOString(),
    };
  } finally {
    await rm(unpacked, { recursive: true, force: true });
  }
}

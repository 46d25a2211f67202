import { createHash } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, ImageError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { ensureDir } from '../util/files.js';
import { guestFilesDir } from '../util/paths.js';
import { ensurePrivateDir } from '../util/private.js';
import { shellQuote } from '../util/shell.js';
import { AGENT_GUEST_PATH, type AgentInputs, agentInputs, buildAgent } from './agent.js';
import { writeCpio } from './cpio.js';
import { type DebianPackage, extractDeb, fetchDeb, pinnedDependency, resolvePackages } from './debian.js';
import { busyboxEntries, moduleEntries, modulesToLoad, unpackKernel } from './kernel.js';
import { type ResolvedRecipe, recipeScripts } from './recipe.js';
import { chooseBuildMode, makeRootImage } from './rootfs.js';
import type { ImageManifest } from './types.js';

/** 2: packages installed at the versions the key names (1 installed them by name). */
const RECIPE_VERSION = 2;
const KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
const BUSYBOX_PACKAGE = 'busybox-static';
/** On top of minbase: the service manager, device manager, logind and its bus and PAM module (user managers), ip, modprobe, ps. */
const BASE_PACKAGES = [
  'systemd',
  'systemd-sysv',
  'udev',
  'dbus',
  'libpam-systemd',
  'iproute2',
  'kmod',
  'procps',
];
/** Loaded by vmkit's initramfs: the root disk, the backdoor's ports, NICs, entropy. */
const INITRAMFS_MODULES = ['virtio_pci', 'virtio_blk', 'virtio_console', 'virtio_net', 'virtio_rng'];
/** The kernel's modules the root filesystem carries (the rest is hardware a VM never has). */
const ROOTFS_MODULE_DIRS = ['arch', 'block', 'crypto', 'fs', 'lib', 'mm', 'net', 'virt'].concat(
  ['block', 'char', 'input', 'net', 'virtio', 'tty', 'hid'].map((dir) => `drivers/${dir}`),
);
/** eth0, eth1, ... as on tiny (net.ifnames=0); the keyboard stays for sendKey. */
/** no_timer_check: see images/tiny.ts (a loaded host under TCG can fail the IO-APIC timer check). */
const CMDLINE = 'console=ttyS0 rdinit=/init net.ifnames=0 panic=-1 quiet i8042.noaux no_timer_check';
const GUEST_FILES = ['debian/init', 'debian/setup.sh', 'debian/vmkit-backdoor.service'];
/** Left out of the image: documentation, manuals and translations. */
const EXCLUDED_PATHS = ['/usr/share/man/*', '/usr/share/doc/*', '/usr/share/info/*', '/usr/share/locale/*'];

export interface DebianInputs {
  recipe: number;
  name: string;
  suite: string;
  kernel: DebianPackage;
  busybox: DebianPackage;
  /** name=version of every package asked for, as the host's apt lists know them. */
  packages: string[];
  modules: string[];
  cmdline: string;
  guestFiles: Record<string, string>;
  agent: AgentInputs;
  /** Guest path to the sha256 of its contents. */
  files: Record<string, string>;
  run: string[];
}

/** Everything a Debian image is made of; its hash is the image's key. */
export async function debianInputs(recipe: ResolvedRecipe, memoFile?: string): Promise<DebianInputs> {
  const names = [KERNEL_METAPACKAGE, BUSYBOX_PACKAGE, ...BASE_PACKAGES, ...recipe.packages];
  let packages: Map<string, DebianPackage>;
  try {
    packages = await resolvePackages([...new Set(names)], memoFile);
  } catch (error) {
    const unknown = (error as Error).message.match(/knows no version of (\S+)/)?.[1];
    if (unknown && recipe.packages.includes(unknown)) {
      throw new ConfigError(
        `buildImage recipe: packages: unknown Debian package ${JSON.stringify(unknown)} (apt-cache has no such package)`,
      );
    }
    throw error;
  }
  const version = (name: string) => `${name}=${(packages.get(name) as DebianPackage).version}`;
  const guestFiles: Record<string, string> = {};
  for (const file of GUEST_FILES) guestFiles[file] = await readFile(join(guestFilesDir(), file), 'utf8');
  return {
    recipe: RECIPE_VERSION,
    name: recipe.name,
    suite: recipe.suite,
    kernel: pinnedDependency(packages.get(KERNEL_METAPACKAGE) as DebianPackage, 'linux-image-'),
    busybox: packages.get(BUSYBOX_PACKAGE) as DebianPackage,
    packages: [...new Set([...BASE_PACKAGES, ...recipe.packages])].map(version),
    modules: INITRAMFS_MODULES,
    cmdline: CMDLINE,
    guestFiles,
    agent: await agentInputs(),
    files: Object.fromEntries(
      Object.entries(recipe.files).map(([path, text]) => [
        path,
        createHash('sha256').update(text).digest('hex'),
      ]),
    ),
    run: recipe.run,
  };
}

/**
 * Builds a Debian image into `scratch`: a root filesystem made by mmdebstrap and turned into ext4
 * by `mke2fs -d` (nothing is mounted), kept as a qcow2 base; the cloud kernel;
 * and vmkit's own small initramfs, which loads the virtio modules and switches to the disk.
 */
export async function buildDebian(
  inputs: DebianInputs,
  recipe: ResolvedRecipe,
  key: string,
  scratch: string,
  debsDir: string,
  progress: (line: string) => void,
): Promise<ImageManifest> {
  const step = async <T>(name: string, run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      throw new ImageError(
        `building image ${inputs.name} failed at step "${name}": ${(error as Error).message}`,
      );
    }
  };
  const mode = await step('checking the build tools', chooseBuildMode);
  ensurePrivateDir(debsDir); // what images are built from: only its owner may add or swap a .deb
  const [kernelDeb, busyboxDeb] = await step('downloading the kernel and busybox', () =>
    Promise.all([fetchDeb(inputs.kernel, debsDir, progress), fetchDeb(inputs.busybox, debsDir, progress)]),
  );
  const work = await mkdtemp(join(scratch, 'work-'));
  try {
    const kernel = await step('unpacking the kernel', () =>
      unpackKernel(kernelDeb, join(work, 'kernel'), progress),
    );
    const modulePaths = await step('initramfs', async () => {
      await extractDeb(busyboxDeb, join(work, 'busybox'));
      const paths = await modulesToLoad(kernel, inputs.modules);
      const entries = busyboxEntries(await readFile(join(work, 'busybox', 'bin', 'busybox')));
      entries.push({
        type: 'file',
        path: 'init',
        data: Buffer.from(inputs.guestFiles['debian/init'] ?? ''),
        mode: 0o755,
      });
      entries.push(...(await moduleEntries(kernel, paths)));
      await writeCpio(join(scratch, 'initrd.cpio'), entries);
      await cp(kernel.vmlinuz, join(scratch, 'vmlinuz'));
      return paths;
    });

    const staging = join(work, 'staging');
    await step('staging guest files', () =>
      stageGuestFiles(inputs, recipe, kernel.modulesDir, kernel.release, staging),
    );
    progress(`mmdebstrap ${inputs.suite} (${mode} mode): minbase + ${inputs.packages.length} packages`);
    const { raw, sizeMiB } = await step('root filesystem', () =>
      makeRootImage(mode, mmdebstrapArgs(inputs, staging), work, progress),
    );
    await step('qemu-img convert', () =>
      runTool('qemu-img', ['convert', '-O', 'qcow2', raw, join(scratch, 'root.qcow2')], {
        timeoutMs: 600_000,
      }),
    );
    return {
      name: inputs.name,
      key,
      kernel: 'vmlinuz',
      initrd: 'initrd.cpio',
      disk: 'root.qcow2',
      diskSizeMiB: sizeMiB,
      cmdline: inputs.cmdline,
      kernelRelease: kernel.release,
      packages: [`${inputs.kernel.name}=${inputs.kernel.version}`, ...inputs.packages],
      modules: modulePaths,
      profile: 'debian',
      builtAt: new Date().toISOString(),
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The guest files, kernel modules and recipe files, laid out as they go into the image. */
async function stageGuestFiles(
  inputs: DebianInputs,
  recipe: ResolvedRecipe,
  modulesDir: string,
  release: string,
  staging: string,
): Promise<void> {
  const put = async (path: string, text: string | Buffer, mode = 0o644) => {
    await ensureDir(join(staging, 'tree', path, '..'));
    await writeFile(join(staging, 'tree', path), text, { mode });
  };
  await put(AGENT_GUEST_PATH, await buildAgent(inputs.agent, staging), 0o755);
  await put('etc/vmkit/setup.sh', inputs.guestFiles['debian/setup.sh'] ?? '', 0o755);
  await put(
    'etc/systemd/system/vmkit-backdoor.service',
    inputs.guestFiles['debian/vmkit-backdoor.service'] ?? '',
  );
  for (const dir of ROOTFS_MODULE_DIRS) {
    await cp(join(modulesDir, 'kernel', dir), join(staging, 'modules', release, 'kernel', dir), {
      recursive: true,
    }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }
  for (const file of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) {
    await cp(join(modulesDir, file), join(staging, 'modules', release, file)).catch(() => {});
  }
  const scripts = recipeScripts(recipe);
  for (const [index, text] of scripts.files.entries()) await put(`../recipe/files/${index}`, text);
  await put('../recipe/files.sh', scripts.filesSh);
  await put('../recipe/run.sh', scripts.runSh);
}

/**
 * mmdebstrap's arguments but mode, format and target. Files come in through its special hooks,
 * which read them as this account: hooks of its own run as root in a user namespace without root,
 * which cannot read this account's private folders.
 */
export function mmdebstrapArgs(inputs: DebianInputs, staging: string): string[] {
  // name=version: the versions the image's key names are the ones installed, or the build fails
  // (the host's package lists are then older than the archive: apt-get update).
  const packages = inputs.packages;
  // /lib is a symlink to /usr/lib in bookworm: the modules go to /usr/lib/modules directly.
  const hooks = [
    `sync-in ${shellQuote(join(staging, 'tree'))} /`,
    'mkdir -p "$1/usr/lib/modules"',
    `sync-in ${shellQuote(join(staging, 'modules'))} /usr/lib/modules`,
    'chroot "$1" sh /etc/vmkit/setup.sh',
    'mkdir -p "$1/tmp/vmkit-recipe"',
    `sync-in ${shellQuote(join(staging, 'recipe'))} /tmp/vmkit-recipe`,
    'chroot "$1" sh /tmp/vmkit-recipe/files.sh && chroot "$1" sh /tmp/vmkit-recipe/run.sh',
    'rm -rf "$1/tmp/vmkit-recipe"',
  ];
  return [
    '--variant=minbase',
    `--include=${packages.join(',')}`,
    ...EXCLUDED_PATHS.map((path) => `--dpkgopt=path-exclude=${path}`),
    '--dpkgopt=path-include=/usr/share/doc/*/copyright',
    ...hooks.map((hook) => `--customize-hook=${hook}`),
    inputs.suite,
  ];
}

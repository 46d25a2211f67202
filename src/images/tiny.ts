import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { guestFilesDir } from '../util/paths.js';
import { ensurePrivateDir } from '../util/private.js';
import { AGENT_GUEST_PATH, type AgentInputs, agentInputs, buildAgent } from './agent.js';
import { type CpioEntry, writeCpio } from './cpio.js';
import { type DebianPackage, extractDeb, fetchDeb, pinnedDependency, resolvePackages } from './debian.js';
import { busyboxEntries, moduleEntries, modulesToLoad, unpackKernel } from './kernel.js';
import type { ImageManifest } from './types.js';

const RECIPE_VERSION = 1;
const KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
const BUSYBOX_PACKAGE = 'busybox-static';
/** What the tiny image needs from the kernel: PCI and MMIO virtio transports, consoles, net, disks, entropy, loop devices. */
const MODULES = [
  'virtio_pci',
  'virtio_mmio',
  'virtio_console',
  'virtio_net',
  'virtio_blk',
  'virtio_rng',
  'loop',
];
const GUEST_FILES = ['inittab', 'rc.sh'];
// no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can miss its ticks
// and panic ("IO-APIC + timer doesn't work"); seen here with two cores shared by many guests.
const CMDLINE = 'console=ttyS0 panic=-1 quiet rdinit=/sbin/init i8042.noaux i8042.nokbd no_timer_check';

export interface TinyInputs {
  recipe: number;
  kernel: DebianPackage;
  busybox: DebianPackage;
  modules: string[];
  cmdline: string;
  guestFiles: Record<string, string>;
  agent: AgentInputs;
}

/** Everything the tiny image is made of; its hash is the image's key. */
export async function tinyInputs(memoFile?: string): Promise<TinyInputs> {
  const packages = await resolvePackages([KERNEL_METAPACKAGE, BUSYBOX_PACKAGE], memoFile);
  const kernel = pinnedDependency(packages.get(KERNEL_METAPACKAGE) as DebianPackage, 'linux-image-');
  const busybox = packages.get(BUSYBOX_PACKAGE) as DebianPackage;
  const guestFiles: Record<string, string> = {};
  for (const file of GUEST_FILES)
    guestFiles[file] = await readFile(join(guestFilesDir(), 'tiny', file), 'utf8');
  return {
    recipe: RECIPE_VERSION,
    kernel,
    busybox,
    modules: MODULES,
    cmdline: CMDLINE,
    guestFiles,
    agent: await agentInputs(),
  };
}

/** Builds the tiny image into `scratch`: the Debian cloud kernel and a busybox initramfs. */
export async function buildTiny(
  inputs: TinyInputs,
  key: string,
  scratch: string,
  debsDir: string,
  progress: (line: string) => void,
): Promise<ImageManifest> {
  ensurePrivateDir(debsDir); // what images are built from: only its owner may add or swap a .deb
  const [kernelDeb, busyboxDeb] = await Promise.all([
    fetchDeb(inputs.kernel, debsDir, progress),
    fetchDeb(inputs.busybox, debsDir, progress),
  ]);
  const unpacked = await mkdtemp(join(scratch, 'unpacked-'));
  try {
    const kernel = await unpackKernel(kernelDeb, join(unpacked, 'kernel'), progress);
    await extractDeb(busyboxDeb, join(unpacked, 'busybox'));
    const modulePaths = await modulesToLoad(kernel, inputs.modules);

    progress('writing initramfs');
    const busybox = await readFile(join(unpacked, 'busybox', 'bin', 'busybox'));
    const entries: CpioEntry[] = busyboxEntries(busybox, ['run', 'tmp', 'root']);
    entries.push({ type: 'file', path: 'etc/inittab', data: Buffer.from(inputs.guestFiles.inittab ?? '') });
    entries.push({
      type: 'file',
      path: 'etc/vmkit/rc.sh',
      data: Buffer.from(inputs.guestFiles['rc.sh'] ?? ''),
      mode: 0o755,
    });
    progress('compiling the guest agent');
    entries.push({
      type: 'file',
      path: AGENT_GUEST_PATH,
      data: await buildAgent(inputs.agent, unpacked),
      mode: 0o755,
    });
    entries.push({ type: 'file', path: 'etc/passwd', data: Buffer.from('root:x:0:0:root:/root:/bin/sh\n') });
    entries.push({ type: 'file', path: 'etc/group', data: Buffer.from('root:x:0:\n') });
    entries.push(...(await moduleEntries(kernel, modulePaths)));
    await writeCpio(join(scratch, 'initrd.cpio'), entries);
    await copyFile(kernel.vmlinuz, join(scratch, 'vmlinuz'));
    const kernelRelease = kernel.release;
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

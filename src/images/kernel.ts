import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageError } from '../errors.js';
import { runTool } from '../util/exec.js';
import type { CpioEntry } from './cpio.js';
import { extractDeb } from './debian.js';
import { loadOrder, readModulesDep } from './modules.js';

/** A Debian kernel package unpacked into a folder, with its modules.dep generated. */
export interface UnpackedKernel {
  root: string;
  release: string;
  modulesDir: string;
  vmlinuz: string;
}

export async function unpackKernel(
  deb: string,
  into: string,
  progress: (line: string) => void,
): Promise<UnpackedKernel> {
  progress(`unpacking ${deb.split('/').pop()}`);
  await extractDeb(deb, into);
  const [release] = await readdir(join(into, 'lib', 'modules'));
  if (!release) throw new ImageError(`${deb} holds no /lib/modules`);
  // Debian generates modules.dep at install time, so the package does not ship it.
  progress(`resolving modules for ${release}`);
  await runTool('depmod', ['-b', into, release], { timeoutMs: 120_000 }).catch((error: Error) => {
    throw new ImageError(`depmod failed: ${error.message}`);
  });
  return {
    root: into,
    release,
    modulesDir: join(into, 'lib', 'modules', release),
    vmlinuz: join(into, 'boot', `vmlinuz-${release}`),
  };
}

/** The module paths (relative to the modules folder) to load for `wanted`, dependencies first. */
export async function modulesToLoad(kernel: UnpackedKernel, wanted: string[]): Promise<string[]> {
  return loadOrder(await readModulesDep(kernel.modulesDir), wanted);
}

/** The base of every vmkit initramfs: folders, busybox as /bin/sh and /sbin/init. */
export function busyboxEntries(busybox: Buffer, extraDirs: string[] = []): CpioEntry[] {
  const dirs = ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'etc', 'etc/vmkit', 'proc', 'sys', 'dev'];
  return [
    ...[...dirs, ...extraDirs, 'lib', 'lib/modules'].map((path): CpioEntry => ({ type: 'dir', path })),
    { type: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { type: 'symlink', path: 'bin/sh', target: 'busybox' },
    { type: 'symlink', path: 'sbin/init', target: '../bin/busybox' },
  ];
}

/** The modules as initramfs entries under lib/modules, their folders first, and the load list. */
export async function moduleEntries(kernel: UnpackedKernel, modulePaths: string[]): Promise<CpioEntry[]> {
  const entries: CpioEntry[] = [
    { type: 'file', path: 'etc/vmkit/modules', data: Buffer.from(modulePaths.map((p) => `${p}\n`).join('')) },
  ];
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
      data: await readFile(join(kernel.modulesDir, path)),
    });
  }
  return entries;
}

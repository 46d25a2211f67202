import { mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageError } from '../errors.js';
import { runTool } from '../util/exec.js';

export interface DebianPackage {
  name: string;
  version: string;
  depends: string;
}

/** The candidate version of a package in the host's apt lists. */
export async function resolvePackage(name: string): Promise<DebianPackage> {
  let output: string;
  try {
    output = (await runTool('apt-cache', ['show', '--no-all-versions', name], { timeoutMs: 60_000 })).stdout;
  } catch (error) {
    throw new ImageError(
      `cannot look up Debian package ${name}: ${(error as Error).message.split('\n')[0]}` +
        '\n(run `apt-get update` first; vmkit builds images from Debian packages)',
    );
  }
  const field = (key: string) => output.match(new RegExp(`^${key}: (.*)$`, 'm'))?.[1]?.trim() ?? '';
  const version = field('Version');
  if (!version) throw new ImageError(`apt-cache knows no version of ${name} (run \`apt-get update\`)`);
  return { name, version, depends: field('Depends') };
}

/**
 * Follows a metapackage such as linux-image-cloud-amd64 to the versioned package it depends on
 * (linux-image-6.1.0-N-cloud-amd64).
 */
export async function resolveKernelPackage(metapackage: string): Promise<DebianPackage> {
  const meta = await resolvePackage(metapackage);
  const target = meta.depends.split(',').map((dep) => dep.trim().split(/\s/)[0] ?? '').find((dep) => dep.startsWith('linux-image-'));
  if (!target) throw new ImageError(`${metapackage} ${meta.version} depends on no linux-image package`);
  return resolvePackage(target);
}

/** Downloads a .deb into `debsDir` unless already there; returns its path. Safe to run concurrently. */
export async function fetchDeb(pkg: DebianPackage, debsDir: string, progress: (line: string) => void): Promise<string> {
  const fileName = `${pkg.name}_${pkg.version.replace(/^\d+:/, '')}_amd64.deb`;
  const target = join(debsDir, fileName);
  if (await exists(target)) return target;
  progress(`downloading ${pkg.name} ${pkg.version}`);
  const scratch = await mkdtemp(join(debsDir, '.download-'));
  try {
    await runTool('apt-get', ['download', `${pkg.name}=${pkg.version}`], { cwd: scratch, timeoutMs: 600_000 });
    const [downloaded] = (await readdir(scratch)).filter((name) => name.endsWith('.deb'));
    if (!downloaded) throw new ImageError(`apt-get download ${pkg.name} produced no .deb file`);
    await rename(join(scratch, downloaded), target);
    const { size } = await stat(target);
    progress(`downloaded ${fileName} (${(size / 1e6).toFixed(1)} MB)`);
    return target;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

export async function extractDeb(deb: string, into: string): Promise<void> {
  await runTool('dpkg-deb', ['-x', deb, into], { timeoutMs: 300_000 });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

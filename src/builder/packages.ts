import { join } from 'node:path';
import { ImageError } from '../errors.js';
import { type DebianPackage, fetchDeb } from '../images/debian.js';
import type { BootImage } from '../images/types.js';
import { runTool } from '../util/exec.js';

/**
 * The packages (with their dependencies) that installing `names` adds to the base image, and
 * their .deb files fetched into `debsDir`. Nothing here needs root: the base disk's dpkg status is
 * read with debugfs from a raw copy, and apt-get only simulates the install against it.
 */
export async function fetchRecipePackages(
  base: BootImage,
  names: string[],
  work: string,
  debsDir: string,
  progress: (line: string) => void,
): Promise<string[]> {
  if (names.length === 0) return [];
  if (!base.disk) throw new ImageError(`the base image ${base.name} has no root disk`);
  const raw = join(work, 'base.raw');
  const status = join(work, 'dpkg-status');
  await runTool('qemu-img', ['convert', '-O', 'raw', base.disk, raw], { timeoutMs: 300_000 });
  await runTool('debugfs', ['-R', `dump /var/lib/dpkg/status ${status}`, raw], { timeoutMs: 60_000 });
  const simulated = await runTool(
    'apt-get',
    [
      '--simulate',
      '--no-install-recommends',
      '-o',
      `Dir::State::status=${status}`,
      '-o',
      'Debug::NoLocking=1',
      'install',
      ...names,
    ],
    { timeoutMs: 120_000 },
  ).catch((error: Error) => {
    throw new ImageError(`apt-get cannot install ${names.join(' ')} on the base image: ${error.message}`);
  });
  const install = parseSimulation(simulated.stdout);
  progress(`packages to install: ${install.map((p) => `${p.name}=${p.version}`).join(' ') || 'none'}`);
  const debs: string[] = [];
  for (const pkg of install) debs.push(await fetchDeb(pkg, debsDir, progress));
  return debs;
}

/** `Inst name [old] (version origin [arch])` lines of `apt-get --simulate install`. */
export function parseSimulation(output: string): DebianPackage[] {
  const packages: DebianPackage[] = [];
  for (const match of output.matchAll(/^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) /gm)) {
    packages.push({ name: match[1] as string, version: match[2] as string, depends: '' });
  }
  return packages;
}

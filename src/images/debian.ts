import { readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ImageError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { ensurePrivateDir, PRIVATE_FILE } from '../util/private.js';
import { makeScratch, sweepScratch } from '../util/scratch.js';

const APT_LISTS = '/var/lib/apt/lists';

export interface DebianPackage {
  name: string;
  version: string;
  depends: string;
}

/**
 * The candidate versions of packages in the host's apt lists, in one apt-cache call (it takes
 * most of a second). Answers are remembered in `memoFile` until apt's lists change.
 */
export async function resolvePackages(
  names: string[],
  memoFile?: string,
): Promise<Map<string, DebianPackage>> {
  const listsStamp = await stat(APT_LISTS).then(
    (s) => String(s.mtimeMs),
    () => 'none',
  );
  const memoKey = `${names.join(',')}@${listsStamp}`;
  const memo: Record<string, DebianPackage[]> = memoFile
    ? await readFile(memoFile, 'utf8').then(
        (text) => JSON.parse(text) as Record<string, DebianPackage[]>,
        () => ({}),
      )
    : {};
  const hit = memo[memoKey];
  if (hit) return new Map(hit.map((pkg) => [pkg.name, pkg]));
  let output: string;
  try {
    output = (await runTool('apt-cache', ['show', '--no-all-versions', ...names], { timeoutMs: 60_000 }))
      .stdout;
  } catch (error) {
    throw new ImageError(
      `cannot look up Debian packages ${names.join(', ')}: ${(error as Error).message.split('\n')[0]}` +
        '\n(run `apt-get update` first; vmkit builds images from Debian packages)',
    );
  }
  const found = new Map<string, DebianPackage>();
  for (const stanza of output.split(/\n\s*\n/)) {
    const field = (key: string) => stanza.match(new RegExp(`^${key}: (.*)$`, 'm'))?.[1]?.trim() ?? '';
    const name = field('Package');
    if (name && !found.has(name))
      found.set(name, { name, version: field('Version'), depends: field('Depends') });
  }
  for (const name of names) {
    if (!found.get(name)?.version)
      throw new ImageError(`apt-cache knows no version of ${name} (run \`apt-get update\`)`);
  }
  if (memoFile) {
    ensurePrivateDir(dirname(memoFile));
    // Every image's answers are kept (tiny, debian, recipes), as long as apt's lists stay the same.
    const current = Object.entries(memo).filter(([key]) => key.endsWith(`@${listsStamp}`));
    await writeFile(
      memoFile,
      JSON.stringify(Object.fromEntries([...current, [memoKey, [...found.values()]]])),
      { mode: PRIVATE_FILE },
    );
  }
  return found;
}

/**
 * The versioned package a metapackage such as linux-image-cloud-amd64 pins with "(= version)",
 * e.g. linux-image-6.1.0-N-cloud-amd64.
 */
export function pinnedDependency(meta: DebianPackage, prefix: string): DebianPackage {
  for (const dep of meta.depends.split(',')) {
    const match = dep.trim().match(/^(\S+) \(= ([^)]+)\)/);
    if (match?.[1]?.startsWith(prefix) && match[2]) return { name: match[1], version: match[2], depends: '' };
  }
  throw new ImageError(`${meta.name} ${meta.version} pins no ${prefix}* package: ${meta.depends}`);
}

/** Downloads a .deb into `debsDir` unless already there; returns its path. Safe to run concurrently. */
export async function fetchDeb(
  pkg: DebianPackage,
  debsDir: string,
  progress: (line: string) => void,
): Promise<string> {
  const fileName = `${pkg.name}_${pkg.version.replace(/^\d+:/, '')}_amd64.deb`;
  const target = join(debsDir, fileName);
  if (await exists(target)) return target;
  progress(`downloading ${pkg.name} ${pkg.version}`);
  await sweepScratch(debsDir, '.download-');
  const scratch = await makeScratch(debsDir, '.download-');
  try {
    await runTool('apt-get', ['download', `${pkg.name}=${pkg.version}`], {
      cwd: scratch,
      timeoutMs: 600_000,
    });
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

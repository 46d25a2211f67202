import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Scratch folders that vmkit builds things in before renaming them into a store. Each carries
 * its creator's pid, so that the leftovers of a killed process are recognised and removed by the
 * next one that uses the store.
 */

/** A fresh scratch folder `<prefix><pid>-XXXXXX` inside `dir`. */
export function makeScratch(dir: string, prefix: string): Promise<string> {
  return mkdtemp(join(dir, `${prefix}${process.pid}-`));
}

/** Removes scratch folders with `prefix` in `dir` whose creating process is gone; returns how many. */
export async function sweepScratch(dir: string, prefix: string): Promise<number> {
  let removed = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || (await processRuns(pid))) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

const runs = (stat: string | undefined) =>
  stat !== undefined && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';

/** Whether a process with this pid exists (and is not a zombie). */
export async function processRuns(pid: number): Promise<boolean> {
  return runs(await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined));
}

/** `processRuns`, for the checks that must answer synchronously. */
export function processRunsSync(pid: number): boolean {
  try {
    return runs(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

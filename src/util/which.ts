import { accessSync, constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';

/**
 * Where Debian installs administrators' tools (depmod, mke2fs, debugfs, chroot, ip). An ordinary
 * account's PATH lacks them, yet they run fine without root: they are searched after PATH.
 */
export const SYSTEM_TOOL_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** PATH's folders, then the system tool folders it lacks. */
export function toolSearchPath(path = process.env.PATH ?? ''): string[] {
  const dirs = path.split(delimiter).filter(Boolean);
  return [...dirs, ...SYSTEM_TOOL_DIRS.filter((dir) => !dirs.includes(dir))];
}

/** An environment whose PATH also holds the system tool folders, for tools that run others. */
export function toolEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, PATH: toolSearchPath(env.PATH).join(delimiter) };
}

const candidates = (program: string) =>
  isAbsolute(program) ? [program] : toolSearchPath().map((dir) => join(dir, program));

/** The full path of an executable on PATH or in the system tool folders, or undefined. */
export async function which(program: string): Promise<string | undefined> {
  for (const candidate of candidates(program)) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

/** `which`, for the checks that must answer synchronously. */
export function whichSync(program: string): string | undefined {
  for (const candidate of candidates(program)) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

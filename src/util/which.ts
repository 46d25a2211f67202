import { accessSync, constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';

const candidates = (program: string) =>
  isAbsolute(program)
    ? [program]
    : (process.env.PATH ?? '')
        .split(delimiter)
        .filter(Boolean)
        .map((dir) => join(dir, program));

/** The full path of an executable on PATH, or undefined. */
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

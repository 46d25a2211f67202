import { posix } from 'node:path';
import { z } from 'zod';
import { shellQuote } from '../util/shell.js';
import { machineName, parseInput } from '../util/validate.js';

/**
 * A derived image: a Debian base plus packages, files and commands run at build time.
 * `buildImage('debian')` is the plain base, the recipe `{ base: 'debian' }`.
 */
export interface ImageRecipe {
  base: 'debian';
  /** The Debian release (default "bookworm"). */
  suite?: string;
  /** Debian packages installed on top of the base (with their dependencies). */
  packages?: string[];
  /** Files written into the image: absolute guest path to contents. */
  files?: Record<string, string>;
  /** Shell commands run as root inside the image after everything is installed, e.g. "systemctl enable foo". */
  run?: string[];
  /** The image's name in `vmkit image list` and in errors (default "debian", or "debian-custom"). */
  name?: string;
}

export const DEFAULT_SUITE = 'bookworm';

/** A path inside the image: absolute, and no ".." that could lead outside it. */
export function isImagePath(path: string): boolean {
  return (
    path.startsWith('/') &&
    !path.includes('\0') &&
    !path.split('/').includes('..') &&
    posix.normalize(path) !== '/' &&
    !path.endsWith('/')
  );
}

/** The recipe's shape (strict: an unknown field is an error naming it). */
export const recipeSchema = z
  .object({
    base: z.literal('debian', { error: 'must be "debian"' }),
    suite: z
      .string({ error: 'must be a Debian release name' })
      .regex(/^[a-z]+$/, { error: 'must be a Debian release name like "bookworm"' })
      .optional(),
    packages: z
      .array(
        z.string({ error: 'must be a package name' }).regex(/^[a-z0-9][a-z0-9+.-]+$/, {
          error: 'is not a Debian package name',
        }),
      )
      .max(500)
      .optional(),
    files: z
      .record(
        z.string().refine(isImagePath, {
          error: 'must be an absolute path inside the image (no "..")',
        }),
        z.string({ error: 'must be the file contents as a string' }),
      )
      .optional(),
    run: z
      .array(z.string({ error: 'must be a shell command' }))
      .max(200)
      .optional(),
    name: machineName.optional(),
  })
  .strict();

/** A checked recipe with every default filled in. */
export interface ResolvedRecipe {
  base: 'debian';
  suite: string;
  packages: string[];
  files: Record<string, string>;
  run: string[];
  name: string;
}

export function parseRecipe(recipe: unknown, what = 'buildImage recipe'): ResolvedRecipe {
  const parsed = parseInput(recipeSchema, recipe, what);
  const derived = Boolean(
    parsed.packages?.length || Object.keys(parsed.files ?? {}).length || parsed.run?.length,
  );
  return {
    base: parsed.base,
    suite: parsed.suite ?? DEFAULT_SUITE,
    // Sorted and unique: the same set of packages is the same image.
    packages: [...new Set(parsed.packages ?? [])].sort(),
    files: Object.fromEntries(Object.entries(parsed.files ?? {}).sort(([a], [b]) => a.localeCompare(b))),
    run: parsed.run ?? [],
    name: parsed.name ?? (derived ? 'debian-custom' : 'debian'),
  };
}

/**
 * The shell scripts that apply a recipe's files and `run` steps inside the image (chrooted, so that
 * a symlink in the image can never lead a write out of it), with the files they copy from
 * `<dir>/files/<index>`. The same scripts serve the host build and the builder VM.
 */
export function recipeScripts(
  recipe: ResolvedRecipe,
  dir = '/tmp/vmkit-recipe',
): { files: string[]; filesSh: string; runSh: string } {
  const lines = ['set -e'];
  const files: string[] = [];
  for (const [index, [path, text]] of Object.entries(recipe.files).entries()) {
    files.push(text);
    lines.push(`mkdir -p ${shellQuote(posix.dirname(path))}`, `cp ${dir}/files/${index} ${shellQuote(path)}`);
  }
  return {
    files,
    filesSh: `${lines.join('\n')}\n`,
    runSh: `${['set -e', ...recipe.run].join('\n')}\n`,
  };
}

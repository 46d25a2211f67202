import { z } from 'zod';
import { IMAGE_NAMES } from '../../images/build.js';
import { parseRecipe, type ResolvedRecipe, recipeSchema } from '../../images/recipe.js';

/** A pool's image: a name ("tiny", "debian") or a recipe (src/images/recipe.ts), checked and resolved. */
export type PoolImage = string | ResolvedRecipe;

const imageName = z.enum(IMAGE_NAMES, {
  error: `must be an image name (${IMAGE_NAMES.join(', ')}) or a recipe object like { "base": "debian", "run": [...] }`,
});

/**
 * A name (checked by `name`) or a recipe. Not a z.union: its error would say only "invalid input"
 * at `image`; this checks the one form the value has and reports that form's own issue with its
 * full path (`pools[0].image.run[1]`, an unknown recipe field by name).
 */
export function imageOrRecipe(name: z.ZodType<string>) {
  return z.unknown().transform((value, ctx): PoolImage => {
    const form = typeof value === 'object' && value !== null ? recipeSchema : name;
    const result = form.safeParse(value);
    if (!result.success) {
      for (const issue of result.error.issues) ctx.addIssue(issue as never);
      return z.NEVER;
    }
    return typeof result.data === 'string' ? result.data : parseRecipe(result.data);
  });
}

/** A desired-state document's pool image: one of vmkit's image names, or a recipe. */
export const poolImageSchema = imageOrRecipe(imageName);

/** A recipe with nothing on top of its base is the base image itself. */
export function isDerived(image: PoolImage): image is ResolvedRecipe {
  return (
    typeof image === 'object' &&
    (image.packages.length > 0 || Object.keys(image.files).length > 0 || image.run.length > 0)
  );
}

export const sameImage = (a: PoolImage, b: PoolImage) => JSON.stringify(a) === JSON.stringify(b);

/** "tiny", or "web (recipe: 1 package, 2 files, 3 run steps)". */
export function describeImage(image: PoolImage): string {
  if (typeof image === 'string') return image;
  const parts = [
    `${image.packages.length} package(s)`,
    `${Object.keys(image.files).length} file(s)`,
    `${image.run.length} run step(s)`,
  ];
  return `${image.name} (recipe on ${image.base} ${image.suite}: ${parts.join(', ')})`;
}

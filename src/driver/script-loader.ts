import { register } from 'node:module';

/**
 * A resolve hook that loads TypeScript outside node_modules as ES modules even where the nearest
 * package.json says CommonJS (as `npm init` makes it). tsx would load such a test script as
 * CommonJS, and its `import ... from 'vmkit'` would become a require() of an ESM-only package.
 * As an ES module it imports vmkit through the `import` condition: the very modules that run it.
 */
const FORCE_ESM_HOOK = `
export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  if (!resolved.url.startsWith('file:') || resolved.url.includes('/node_modules/')) return resolved;
  const { pathname } = new URL(resolved.url);
  if (!/\\.tsx?$/.test(pathname) || !String(resolved.format ?? 'commonjs').startsWith('commonjs')) return resolved;
  return { ...resolved, format: 'module' };
}
`;

/**
 * Makes `import()` of a test script work in any project: tsx for TypeScript (ESM and CommonJS),
 * and the hook above registered after it, so that it sees tsx's answer and has the last word.
 * Registered for the whole process rather than namespaced (tsImport): the script's `vmkit` must
 * be the very modules running it, or `error instanceof TimeoutError` is false in it.
 */
export async function registerScriptLoader(): Promise<void> {
  const [esm, cjs] = await Promise.all([import('tsx/esm/api'), import('tsx/cjs/api')]);
  esm.register();
  cjs.register(); // a .js or .cts helper of a CommonJS project still loads as CommonJS
  register(`data:text/javascript,${encodeURIComponent(FORCE_ESM_HOOK)}`);
}

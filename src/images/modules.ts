import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageError } from '../errors.js';

/** Parses modules.dep into a map from module name (dashes as underscores) to its path and direct dependencies. */
export function parseModulesDep(text: string): Map<string, { path: string; deps: string[] }> {
  const modules = new Map<string, { path: string; deps: string[] }>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const path = line.slice(0, colon).trim();
    const deps = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    modules.set(moduleName(path), { path, deps: deps.map(moduleName) });
  }
  return modules;
}

/** `kernel/drivers/char/virtio_console.ko[.xz]` -> `virtio_console` */
export function moduleName(pathOrName: string): string {
  const base = pathOrName.split('/').pop() ?? pathOrName;
  return base.replace(/\.ko(\.(xz|gz|zst))?$/, '').replaceAll('-', '_');
}

/**
 * The module paths to load, dependencies first, so that each insmod finds what it needs
 * already loaded. Each module appears once.
 */
export function loadOrder(modulesDep: string, wanted: string[]): string[] {
  const modules = parseModulesDep(modulesDep);
  const order: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (name: string, neededBy: string, asWritten = name) => {
    if (done.has(name)) return;
    const entry = modules.get(name);
    if (!entry)
      throw new ImageError(`kernel module ${asWritten} (needed by ${neededBy}) is not in modules.dep`);
    if (visiting.has(name)) throw new ImageError(`kernel module dependency cycle through ${name}`);
    visiting.add(name);
    for (const dep of entry.deps) visit(dep, name);
    visiting.delete(name);
    done.add(name);
    order.push(entry.path);
  };
  for (const name of wanted) visit(moduleName(name), 'the image recipe', name);
  return order;
}

export async function readModulesDep(modulesDir: string): Promise<string> {
  try {
    return await readFile(join(modulesDir, 'modules.dep'), 'utf8');
  } catch (error) {
    throw new ImageError(`cannot read modules.dep in ${modulesDir}: ${(error as Error).message}`);
  }
}

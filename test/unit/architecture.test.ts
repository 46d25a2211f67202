import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * Structural rules over src/. Imports are read with patterns rather than the TypeScript parser
 * (loading it takes longer than this whole file should): static import and export-from
 * statements can only stand at the top level, and biome formats them from column 0, so the
 * patterns are anchored there; a guard test fails if any such line is left unread.
 */

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');
const MAX_LINES = 400;

interface Edge {
  /** The file imported, relative to src/ ('util/time.ts'). */
  to: string;
  specifier: string;
  /** Erased at compile time: `import type`, `export type ... from`, or only type-only specifiers. */
  typeOnly: boolean;
  line: number;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((entry) => {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) return sourceFiles(path);
      return entry.isFile() && entry.name.endsWith('.ts') ? [path] : [];
    })
    .sort();
}

const rel = (path: string) => relative(SRC, path).split(sep).join('/');

/** The file a relative specifier names: './x.js' is x.ts, as NodeNext resolution maps it. */
function resolveSpecifier(from: string, specifier: string): string {
  const target = resolve(dirname(from), specifier);
  for (const candidate of [
    target.replace(/\.js$/, '.ts'),
    target.replace(/\.mjs$/, '.mts'),
    target,
    `${target}.ts`,
    join(target, 'index.ts'),
  ]) {
    if (candidate.startsWith(SRC) && existsSync(candidate) && candidate.endsWith('.ts')) return candidate;
  }
  return target.replace(/\.js$/, '.ts'); // reported as unresolved below
}

/** A static import or export-from statement at column 0, multi-line clauses included. */
const STATEMENT =
  /^(import|export)(\s+type)?\s+(\*(?:\s+as\s+[\w$]+)?|\{[^}]*\}|[\w$]+(?:\s*,\s*(?:\{[^}]*\}|\*\s+as\s+[\w$]+))?)\s+from\s*(['"])([^'"\n]+)\4/gm;
/** import './x.js': kept for its side effects. */
const SIDE_EFFECT = /^import\s*(['"])([^'"\n]+)\1/gm;
/** Lines that start a statement the patterns above must have read. */
const MUST_READ = /^(?:import[\s{*'"]|export(?:\s+type)?\s*(?:\*|\{[^}]*\}\s*from\b))/gm;

interface Statement {
  specifier: string;
  typeOnly: boolean;
  /** Offset of the statement in the text. */
  at: number;
}

/** Erased at compile time: `import type`, `export type`, or braces holding only `type` specifiers. */
function isTypeOnly(typeKeyword: string | undefined, clause: string): boolean {
  if (typeKeyword) return true;
  if (!clause.startsWith('{')) return false; // a default or namespace import, or export *
  const elements = clause
    .slice(1, -1)
    .replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, '')
    .split(',')
    .map((element) => element.trim())
    .filter((element) => element !== '');
  return elements.length > 0 && elements.every((element) => /^type\s/.test(element));
}

/** The import and export-from statements of a file, and the lines that look like one but were not read. */
function statementsOf(text: string): { statements: Statement[]; unread: number[] } {
  const statements: Statement[] = [];
  for (const match of text.matchAll(STATEMENT)) {
    statements.push({
      specifier: match[5] as string,
      typeOnly: isTypeOnly(match[2], match[3] as string),
      at: match.index,
    });
  }
  for (const match of text.matchAll(SIDE_EFFECT)) {
    statements.push({ specifier: match[2] as string, typeOnly: false, at: match.index });
  }
  statements.sort((a, b) => a.at - b.at);
  const read = new Set(statements.map((statement) => statement.at));
  const unread = [...text.matchAll(MUST_READ)]
    .filter((match) => !read.has(match.index))
    .map((match) => lineAt(text, match.index));
  return { statements, unread };
}

const lineAt = (text: string, offset: number) => text.slice(0, offset).split('\n').length;

/** Every file's static imports and re-exports of other files in src/. */
function importGraph() {
  const files = sourceFiles(SRC);
  const edges = new Map<string, Edge[]>();
  const unresolved: string[] = [];
  const unread: string[] = [];
  for (const path of files) {
    const text = readFileSync(path, 'utf8');
    const found = statementsOf(text);
    for (const line of found.unread) unread.push(`src/${rel(path)}:${line}`);
    const list: Edge[] = [];
    for (const { specifier, typeOnly, at } of found.statements) {
      if (!specifier.startsWith('.')) continue; // node: builtins and packages
      const target = resolveSpecifier(path, specifier);
      const line = lineAt(text, at);
      if (!existsSync(target))
        unresolved.push(`src/${rel(path)}:${line} imports ${specifier} (no such file)`);
      list.push({ to: rel(target), specifier, typeOnly, line });
    }
    edges.set(rel(path), list);
  }
  return { files: files.map(rel), edges, unresolved, unread };
}

/** Every cycle met by a depth-first search, each as a path that ends where it starts. */
function findCycles(nodes: string[], next: (node: string) => string[]): string[][] {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const seen = new Set<string>();
  const visit = (node: string) => {
    state.set(node, 'open');
    stack.push(node);
    for (const target of next(node)) {
      const mark = state.get(target);
      if (mark === 'open') {
        const cycle = [...stack.slice(stack.indexOf(target)), target];
        // One entry per cycle, whichever file the search met first.
        const members = cycle.slice(0, -1);
        const start = members.indexOf([...members].sort()[0] as string);
        const key = [...members.slice(start), ...members.slice(0, start)].join(' -> ');
        if (!seen.has(key)) {
          seen.add(key);
          cycles.push(cycle);
        }
      } else if (mark === undefined) {
        visit(target);
      }
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of nodes) if (!state.has(node)) visit(node);
  return cycles;
}

/** Every line of src/ that matches `pattern`, comments left out. */
function lines(files: string[], pattern: RegExp): Array<{ file: string; line: number }> {
  return files.flatMap((file) =>
    readFileSync(join(SRC, file), 'utf8')
      .split('\n')
      .flatMap((text, n) =>
        pattern.test(text) && !/^\s*(\/\/|\*|\/\*)/.test(text) ? [{ file, line: n + 1 }] : [],
      ),
  );
}

const where = (hit: { file: string; line: number }) => `src/${hit.file}:${hit.line}`;

/** QMP commands that name nothing else in vmkit (stop, cont and quit are caught as executed). */
const QMP_COMMANDS = [
  'qmp_capabilities',
  'query-status',
  'query-migrate',
  'migrate',
  'migrate-incoming',
  'migrate_cancel',
  'migrate-set-capabilities',
  'human-monitor-command',
  'system_powerdown',
  'system_reset',
  'set_link',
  'set-action',
  'screendump',
  'send-key',
  'device_add',
  'blockdev-add',
];

/** QEMU command-line options, as argv elements. */
const QEMU_OPTIONS = [
  'drive',
  'device',
  'netdev',
  'chardev',
  'object',
  'machine',
  'accel',
  'bios',
  'sandbox',
  'incoming',
  'nodefaults',
  'no-user-config',
  'display',
  'serial',
  'kernel',
  'initrd',
  'append',
];

/**
 * The modules vmkit runs as programs of their own (a switch, a hub, a relay): named by
 * `nodeEntry(import.meta.url, './x', ...)` or `new URL('./x.js', import.meta.url)`.
 */
function entryModules(files: string[]): Set<string> {
  const entries = new Set<string>();
  for (const file of files) {
    const text = readFileSync(join(SRC, file), 'utf8');
    const named = /nodeEntry\(import\.meta\.url,\s*'([^']+)'|new URL\('([^']+)\.js',\s*import\.meta\.url\)/g;
    for (const match of text.matchAll(named)) {
      const target = rel(resolveSpecifier(join(SRC, file), `${match[1] ?? match[2]}.js`));
      if (files.includes(target)) entries.add(target);
    }
  }
  return entries;
}

const ARCHITECTURE = resolve(SRC, '../docs/architecture.md');

/** The layers, first to last, from the `**Order:**` line (`a` < `b` < ...) of the architecture doc. */
function layerOrder(doc: string): string[] {
  const start = doc.indexOf('**Order:**');
  if (start < 0) return [];
  const paragraph = doc.slice(start).split('\n\n')[0] as string;
  return [...paragraph.matchAll(/`([^`]+)`/g)].map((match) => match[1] as string);
}

/**
 * Which layer a file (relative to src/) is in: the most specific that holds it (a folder layer
 * ends with '/'; a file layer is that file alone); -1 for none.
 */
function layerIndex(order: string[], file: string): number {
  const holds = (layer: string) => (layer.endsWith('/') ? file.startsWith(layer) : file === layer);
  let best = -1;
  order.forEach((layer, index) => {
    if (holds(layer) && (best < 0 || layer.length > (order[best] as string).length)) best = index;
  });
  return best;
}

/** Lines of text; a last line without a newline counts too. */
const countLines = (text: string) =>
  text === '' ? 0 : text.split('\n').length - (text.endsWith('\n') ? 1 : 0);

describe('architecture of src/', () => {
  const graph = importGraph();

  test('the parser sees the imports (sanity: known edges are found, type-only ones marked)', () => {
    assert.ok(graph.files.length > 20, `only ${graph.files.length} files found under ${SRC}`);
    assert.ok(graph.files.includes('backends/qemu/args.ts'));
    const edge = (from: string, to: string) =>
      (graph.edges.get(from) ?? []).find((candidate) => candidate.to === to);
    assert.equal(edge('backends/qemu/args.ts', 'backends/backend.ts')?.typeOnly, true, 'import type');
    // import { type AccelRequest, chooseAccel }: a value among type specifiers keeps it at runtime.
    assert.equal(edge('snapshot/verify.ts', 'backends/accel.ts')?.typeOnly, false, 'mixed specifiers');
    assert.equal(edge('snapshot/verify.ts', 'runtime/runtime.ts')?.typeOnly, true);
  });

  test('every line that starts an import or export-from statement was read', () => {
    assert.deepEqual(graph.unread, [], 'statements the patterns missed: extend STATEMENT');
  });

  test('every relative import names a file that exists', () => {
    assert.deepEqual(graph.unresolved, []);
  });

  test('no import cycle among runtime (non-type-only) imports', () => {
    const runtime = (file: string) =>
      (graph.edges.get(file) ?? []).filter((edge) => !edge.typeOnly).map((edge) => edge.to);
    const cycles = findCycles(graph.files, runtime);
    assert.equal(
      cycles.length,
      0,
      `import cycles in src/ (runtime imports only):\n${cycles.map((cycle) => `  ${cycle.join(' -> ')}`).join('\n')}`,
    );
  });

  test('no import cycle, type-only imports included: a type ties a module to the one it names', () => {
    const all = (file: string) => (graph.edges.get(file) ?? []).map((edge) => edge.to);
    const cycles = findCycles(graph.files, all);
    assert.equal(
      cycles.length,
      0,
      `import cycles in src/ (type-only imports included):\n${cycles.map((cycle) => `  ${cycle.join(' -> ')}`).join('\n')}`,
    );
  });

  test('no import goes against the layer order of docs/architecture.md (type-only imports included)', () => {
    const order = layerOrder(readFileSync(ARCHITECTURE, 'utf8'));
    assert.ok(order.length > 10, `the Order line of docs/architecture.md names ${order.length} layers`);
    const unplaced = graph.files.filter((file) => layerIndex(order, file) < 0);
    assert.deepEqual(
      unplaced,
      [],
      'files in no layer of docs/architecture.md: add their folder to the Order line',
    );
    const violations = graph.files.flatMap((file) =>
      (graph.edges.get(file) ?? [])
        .filter((edge) => layerIndex(order, edge.to) > layerIndex(order, file))
        .map(
          (edge) =>
            `src/${file}:${edge.line} (${order[layerIndex(order, file)]}) imports ${edge.specifier} (${order[layerIndex(order, edge.to)]})`,
        ),
    );
    assert.deepEqual(violations, [], `imports of a later layer:\n  ${violations.join('\n  ')}`);
  });

  test('the cache (export, import) sits above the stores it moves: images/ and snapshot/', () => {
    const order = layerOrder(readFileSync(ARCHITECTURE, 'utf8'));
    const at = (layer: string) => order.indexOf(layer);
    assert.ok(at('cache/') > at('images/') && at('cache/') > at('snapshot/'), order.join(' < '));
    assert.ok(at('cache/') < at('cli/'), order.join(' < '));
  });

  test(`no file in src/ is over ${MAX_LINES} lines`, () => {
    const offenders = graph.files
      .map((file) => ({ file, lines: countLines(readFileSync(join(SRC, file), 'utf8')) }))
      .filter(({ lines }) => lines > MAX_LINES)
      .map(({ file, lines }) => `src/${file}: ${lines} lines`);
    assert.deepEqual(offenders, [], `files over ${MAX_LINES} lines:\n  ${offenders.join('\n  ')}`);
  });

  test('no bare VmkitError is thrown outside src/errors.ts: each error is a typed subclass (ConfigError = exit 2)', () => {
    const offenders = graph.files
      .filter((file) => file !== 'errors.ts')
      .flatMap((file) =>
        readFileSync(join(SRC, file), 'utf8')
          .split('\n')
          .flatMap((line, n) => (/\bnew VmkitError\(/.test(line) ? [`src/${file}:${n + 1}`] : [])),
      );
    assert.deepEqual(offenders, [], `bare VmkitErrors:\n  ${offenders.join('\n  ')}`);
  });

  test('nothing in src/ throws or rejects with a plain Error: the CLI prints typed errors as one line', () => {
    const offenders = graph.files.flatMap((file) =>
      readFileSync(join(SRC, file), 'utf8')
        .split('\n')
        .flatMap((line, n) => (/(throw|reject\()\s*new Error\(/.test(line) ? [`src/${file}:${n + 1}`] : [])),
    );
    assert.deepEqual(offenders, [], `plain Errors:\n  ${offenders.join('\n  ')}`);
  });

  test('no recursive mkdir outside src/util/files.ts: under /proc it spins without end (use ensureDir)', () => {
    // cgroups.ts creates groups under /sys/fs/cgroup, a path vmkit fixes, not one a user gives.
    const allowed = new Set(['util/files.ts', 'fleet/vmm/cgroups.ts']);
    const offenders = graph.files
      .filter((file) => !allowed.has(file))
      .flatMap((file) =>
        readFileSync(join(SRC, file), 'utf8')
          .split('\n')
          .flatMap((line, n) => (/\bmkdir(Sync)?\(.*recursive/.test(line) ? [`src/${file}:${n + 1}`] : [])),
      );
    assert.deepEqual(offenders, [], `recursive mkdirs:\n  ${offenders.join('\n  ')}`);
  });

  test("process.exit only in src/cli/ and in the entry modules of vmkit's own processes", () => {
    const entries = entryModules(graph.files);
    assert.ok(
      entries.has('network/switch-host.ts') && entries.has('project/hub-main.ts'),
      [...entries].join(),
    );
    const offenders = lines(graph.files, /\bprocess\.exit\(/).filter(
      (hit) => !hit.file.startsWith('cli/') && !entries.has(hit.file),
    );
    assert.deepEqual(
      offenders.map(where),
      [],
      'library code throws a typed error (InterruptedError, ...) and the CLI picks the exit code',
    );
  });

  test('defaultRuntime() only where a public call names no runtime: library code is handed one', () => {
    const publicEntries = new Set([
      'runtime/runtime.ts', // its definition
      'machine/start.ts', // startMachine's options, keepMachineState
      'snapshot/restore.ts', // restoreMachine's options
      'snapshot/store.ts', // snapshotProblems, pruneSnapshots
      'images/build.ts', // buildImage's options
    ]);
    const offenders = lines(graph.files, /\bdefaultRuntime\(/).filter((hit) => !publicEntries.has(hit.file));
    assert.deepEqual(
      offenders.map(where),
      [],
      "pass the caller's Runtime down (the CLI makes one per command)",
    );
  });

  test('no module-level let: state lives on a Runtime or on the object that owns it', () => {
    const entries = entryModules(graph.files);
    // The process's signal hooks, and the default runtime of public calls that name none.
    const allowed = new Set(['util/exit-hooks.ts', 'runtime/runtime.ts']);
    const offenders = lines(graph.files, /^(export\s+)?let\s/).filter(
      (hit) => !entries.has(hit.file) && !allowed.has(hit.file),
    );
    assert.deepEqual(offenders.map(where), [], 'module-level state');
  });

  test('the commands vmkit runs in a guest (drop caches, power-off, port probes) are files in guest/profiles/', () => {
    const offenders = lines(graph.files, /drop_caches|\bpoweroff\b|\/proc\/net\/(tcp|unix)/);
    assert.deepEqual(offenders.map(where), [], 'guest commands written as strings in src/');
  });

  test('only src/backends/ imports src/backends/qemu/: the rest of vmkit asks the Backend', () => {
    const violations = graph.files
      .filter((file) => !file.startsWith('backends/'))
      .flatMap((file) =>
        (graph.edges.get(file) ?? [])
          .filter((edge) => edge.to.startsWith('backends/qemu/'))
          .map((edge) => `src/${file}:${edge.line} imports ${edge.specifier}`),
      );
    assert.deepEqual(violations, [], `QEMU named outside src/backends:\n  ${violations.join('\n  ')}`);
  });

  test('no QMP or HMP command, and no QEMU command-line option, is written outside src/backends/qemu/', () => {
    const outside = graph.files.filter((file) => !file.startsWith('backends/qemu/'));
    // QMP commands by their names as string literals (the common words stop, cont and quit when
    // they are executed); HMP commands as they start a line; QEMU options as argv elements.
    const qmp = new RegExp(
      `['"\`](${QMP_COMMANDS.join('|')})['"\`]|execute(<[^>]*>)?\\(['"\`](stop|cont|quit)['"\`]|\\bhostfwd_(add|remove)\\b`,
    );
    const options = new RegExp(`['"\`]-(${QEMU_OPTIONS.join('|')})['"\`]`);
    const offenders = [...lines(outside, qmp), ...lines(outside, options)];
    assert.deepEqual(offenders.map(where), [], 'QEMU specifics outside src/backends/qemu');
  });

  test('src/util/ imports nothing from other src/ folders except src/errors.ts (type imports included)', () => {
    const violations = graph.files
      .filter((file) => file.startsWith('util/'))
      .flatMap((file) =>
        (graph.edges.get(file) ?? [])
          .filter((edge) => !edge.to.startsWith('util/') && edge.to !== 'errors.ts')
          .map((edge) => `src/${file}:${edge.line} imports ${edge.specifier} (src/${edge.to})`),
      );
    assert.deepEqual(violations, [], `layer violations:\n  ${violations.join('\n  ')}`);
  });
});

describe('architecture test helpers', () => {
  test('findCycles reports each cycle once, as a closed path', () => {
    const graph: Record<string, string[]> = { a: ['b'], b: ['c', 'd'], c: ['a'], d: ['d'], e: ['a'] };
    assert.deepEqual(
      findCycles(Object.keys(graph), (node) => graph[node] ?? []),
      [
        ['a', 'b', 'c', 'a'],
        ['d', 'd'],
      ],
    );
    assert.deepEqual(
      findCycles(['x', 'y'], (node) => (node === 'x' ? ['y'] : [])),
      [],
    );
  });

  test('layerOrder reads the Order line; layerIndex places files by folder or by name', () => {
    const doc = 'text\n\n**Order:** `errors.ts` < `util/` <\n`machine/` < `index.ts`\n\nmore `x/`';
    const order = layerOrder(doc);
    assert.deepEqual(order, ['errors.ts', 'util/', 'machine/', 'index.ts']);
    assert.equal(layerIndex(order, 'util/time.ts'), 1);
    assert.equal(layerIndex(order, 'machine/launch.ts'), 2);
    assert.equal(layerIndex(order, 'index.ts'), 3);
    assert.equal(layerIndex(order, 'machines.ts'), -1, 'a file is not in a folder layer of a similar name');
  });

  test('countLines: no extra line for the final newline; an unterminated last line counts', () => {
    assert.equal(countLines('a\nb\n'), 2);
    assert.equal(countLines('a\nb'), 2);
    assert.equal(countLines(''), 0);
  });

  test('statements are read in every spelling, multi-line included; type-only ones are marked', () => {
    const text = [
      "import type { A } from './a.js';",
      "import { type B, type C } from './b.js';",
      "import {\n  type D,\n  e,\n} from './d.js';",
      "import f from './f.js';",
      "import * as g from './g.js';",
      "import './h.js';",
      "export type { I } from './i.js';",
      "export { type J } from './j.js';",
      "export {\n  k,\n  type K2,\n} from './k.js';",
      "export * from './l.js';",
      "export * as m from './m.js';",
      "import n, { type N2 } from './n.js';",
      "import type O from './o.js';",
      "import {\n  type P, // a comment, with a comma\n  type Q,\n} from './p.js';",
      "import { z } from 'zod';",
      "import {} from './empty.js';",
      "// import { r } from './r.js';",
      " * import { s } from './s.js';",
      "const t = `\n  import { u } from './u.js'`;",
      'export { v, w };',
      "export const x = 'from';",
    ].join('\n');
    const { statements, unread } = statementsOf(text);
    assert.deepEqual(
      statements.map(({ specifier, typeOnly, at }) => [specifier, typeOnly, lineAt(text, at)]),
      [
        ['./a.js', true, 1],
        ['./b.js', true, 2],
        ['./d.js', false, 3],
        ['./f.js', false, 7],
        ['./g.js', false, 8],
        ['./h.js', false, 9],
        ['./i.js', true, 10],
        ['./j.js', true, 11],
        ['./k.js', false, 12],
        ['./l.js', false, 16],
        ['./m.js', false, 17],
        ['./n.js', false, 18],
        ['./o.js', true, 19],
        ['./p.js', true, 20],
        ['zod', false, 24],
        ['./empty.js', false, 25],
      ],
    );
    assert.deepEqual(unread, []);
    // A statement the patterns cannot read is reported, not silently skipped.
    assert.deepEqual(statementsOf("import x = require('./x.js');\nimport {\n  a } from b;").unread, [1, 2]);
  });
});

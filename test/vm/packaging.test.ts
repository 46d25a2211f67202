// vmkit as a user gets it: `npm pack`, installed from the tarball into a fresh project made by
// `npm init -y` (CommonJS), with an ES module project (`"type": "module"`) in a folder inside
// it. Both use it through `vmkit run`, node:test, vitest, require() and `tsc --noEmit` (strict,
// skipLibCheck: false). One install serves both (the inner project finds the outer node_modules,
// as in a monorepo); each suite boots one tiny machine and runs one command. Needs dist/ built.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stripVTControlCharacters as stripAnsi } from 'node:util';
import { root, runProgram } from '../helpers.js';

const SUITE = `import { defineTest, TimeoutError } from 'vmkit';

export default defineTest({
  name: 'packaged',
  machines: { box: { memoryMiB: 128 } },
  async test({ box }) {
    const error = await box.waitForFile('/nope', { timeoutMs: 1000 }).catch((e: unknown) => e);
    // The suite's vmkit is the one running it.
    if (!(error instanceof TimeoutError)) throw new Error(\`not the same vmkit: \${String(error)}\`);
  },
});
`;

const NODE_TEST = `import { after, before, it } from 'node:test';
import { useMachines } from 'vmkit';

const vms = useMachines({ before, after }, { box: { memoryMiB: 128 } });
it('runs a command', async () => {
  if ((await vms.box.succeed('hostname')) !== 'box\\n') throw new Error('wrong hostname');
});
`;

const VITEST = `import { afterAll, beforeAll, expect, test } from 'vitest';
import { useMachines } from 'vmkit';

const vms = useMachines(
  { before: (fn) => beforeAll(fn, 300_000), after: (fn) => afterAll(fn, 60_000) },
  { box: { memoryMiB: 128 } },
);
test('runs a command', async () => {
  expect(await vms.box.succeed('hostname')).toBe('box\\n');
});
`;

/** What require('vmkit') gives: the module `import` gives, or the error it throws. */
const REQUIRE = `let required;
try { required = require('vmkit'); } catch (error) { required = { error: error.message }; }
import('vmkit').then((imported) =>
  console.log(JSON.stringify({ same: required.TimeoutError === imported.TimeoutError, error: required.error })),
);
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'nodenext',
    strict: true,
    skipLibCheck: false,
    noEmit: true,
  },
  include: ['suite.ts', 'node.test.ts'],
};

describe('the packed package in fresh projects', () => {
  let scratch: string;
  let cjs: string;
  let esm: string;
  const env: NodeJS.ProcessEnv = { NODE_TEST_CONTEXT: undefined };
  const bin = (name: string) => join(cjs, 'node_modules', '.bin', name);

  before(async () => {
    assert.ok(existsSync(join(root, 'dist', 'require.cjs')), 'dist/ is built (npm run build)');
    scratch = await mkdtemp(join(tmpdir(), 'vmkit-packaging-'));
    // better-sqlite3 compiles from source here, against the installed Node's headers.
    if (existsSync('/usr/include/node')) env.npm_config_nodedir = '/usr';
    const npm = (args: string[], cwd: string) => runProgram('npm', args, { cwd, env, timeoutMs: 600_000 });
    const packed = await npm(['pack', '--silent', '--pack-destination', scratch], root);
    assert.equal(packed.code, 0, packed.stderr);
    const tarball = join(scratch, packed.stdout.trim().split('\n').pop() ?? '');
    cjs = join(scratch, 'cjs');
    esm = join(cjs, 'esm');
    await mkdir(esm, { recursive: true });
    assert.equal((await npm(['init', '-y'], cjs)).code, 0);
    assert.equal((await npm(['init', '-y'], esm)).code, 0);
    await npm(['pkg', 'set', 'type=module'], esm);
    const installed = await npm(['install', '--no-audit', '--no-fund', tarball], cjs);
    assert.equal(installed.code, 0, installed.stderr);
    for (const dir of [cjs, esm]) {
      await writeFile(join(dir, 'suite.ts'), SUITE);
      await writeFile(join(dir, 'node.test.ts'), NODE_TEST);
      await writeFile(join(dir, 'vm.test.ts'), VITEST);
      await writeFile(join(dir, 'tsconfig.json'), JSON.stringify(TSCONFIG, null, 2));
    }
    await writeFile(join(cjs, 'require.cjs'), REQUIRE);
  });

  after(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('makes a CommonJS project by npm init, and an ES module project', async () => {
    assert.equal(JSON.parse(await readFile(join(cjs, 'package.json'), 'utf8')).type, 'commonjs');
    assert.equal(JSON.parse(await readFile(join(esm, 'package.json'), 'utf8')).type, 'module');
  });

  for (const kind of ['cjs', 'esm'] as const) {
    const dir = () => (kind === 'cjs' ? cjs : esm);

    it(`${kind}: vmkit run loads a TypeScript suite that imports vmkit`, async () => {
      const run = await runProgram(bin('vmkit'), ['run', 'suite.ts'], { cwd: dir(), env });
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stderr, /passed in/);
    });

    it(`${kind}: node:test runs a suite with useMachines`, async () => {
      const run = await runProgram(process.execPath, ['--import', 'tsx', '--test', 'node.test.ts'], {
        cwd: dir(),
        env,
      });
      assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
      assert.match(run.stdout, /# pass 1/);
    });

    it(`${kind}: vitest runs a suite with useMachines`, async () => {
      const vitest = join(root, 'node_modules', '.bin', 'vitest');
      const run = await runProgram(vitest, ['run', '--root', '.', '--exclude', 'esm/**', 'vm.test.ts'], {
        cwd: dir(),
        env,
      });
      assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
      // vitest colours its summary where CI is set: read it as text.
      assert.match(stripAnsi(run.stdout), /Tests +1 passed \(1\)/);
    });

    it(`${kind}: the published types check, strict and with skipLibCheck: false`, async () => {
      const tsc = join(root, 'node_modules', '.bin', 'tsc');
      const run = await runProgram(tsc, ['-p', 'tsconfig.json'], { cwd: dir(), env });
      assert.equal(run.code, 0, run.stdout);
    });
  }

  it("require('vmkit') gives the module import gives, or says what to do", async () => {
    const run = await runProgram(process.execPath, ['require.cjs'], { cwd: cjs, env });
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as { same: boolean; error?: string };
    if (!process.features.require_module) {
      assert.match(result.error ?? '', /vmkit is an ES module.*"type": "module"/);
      return;
    }
    assert.deepEqual(result, { same: true });
    const refused = await runProgram(process.execPath, ['--no-experimental-require-module', 'require.cjs'], {
      cwd: cjs,
      env,
    });
    const error = (JSON.parse(refused.stdout) as { error?: string }).error ?? '';
    assert.match(error, /vmkit is an ES module.*"type": "module"/);
  });
});

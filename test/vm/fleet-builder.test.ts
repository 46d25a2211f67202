// Recipe pools built in ephemeral builder VMs (issue #13 point 5), on Debian guests under TCG:
// three builder boots (a recipe, its change, a failing one), two instance boots, and one builder
// interrupted by SIGINT before it is up.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { type DesiredDocument, parseDesired } from '../../src/fleet/desired/schema.js';
import { Fleet } from '../../src/fleet/fleet.js';
import { findBase } from '../../src/fleet/snapshots/base.js';
import { readAudit } from '../../src/fleet/state/audit.js';
import type { ReconcileReport } from '../../src/index.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { cacheDir } from '../../src/util/paths.js';
import { alive, cli, descendantsOf, lacks, root } from '../helpers.js';

const fleetDir = mkdtempSync('/tmp/vmkit-fleet-builder-');

/**
 * An image cache of this test's own, seeded with links to every image already built (the base
 * `debian` one above all), so that the recipes are really built here each run and their images
 * go away with the test instead of piling up in the shared cache.
 */
function privateCache(): string {
  const shared = cacheDir();
  const dir = mkdtempSync('/tmp/vmkit-cache-builder-');
  mkdirSync(join(dir, 'images'));
  for (const entry of readdirSync(join(shared, 'images'))) {
    if (!entry.startsWith('.')) symlinkSync(join(shared, 'images', entry), join(dir, 'images', entry));
  }
  mkdirSync(join(shared, 'debs'), { recursive: true });
  symlinkSync(join(shared, 'debs'), join(dir, 'debs'));
  cpSync(join(shared, 'refs'), join(dir, 'refs'), { recursive: true });
  return dir;
}

/** A recipe with a file and a `run` step that reads it: its output shows the build happened inside. */
const recipe = (word: string) => ({
  base: 'debian',
  name: 'builder-test',
  files: { '/etc/vmkit-word.txt': `${word}\n` },
  run: ['echo "run step saw $(cat /etc/vmkit-word.txt)" > /etc/vmkit-run.txt'],
});

const document = (image: unknown, extra: unknown[] = []): DesiredDocument =>
  parseDesired(
    JSON.stringify({
      version: 1,
      tenants: [{ id: 'bld', subnet: '10.76.0.0/24' }],
      pools: [{ tenant: 'bld', id: 'app', image, memoryMiB: 256, desired: { running: 1 } }, ...extra],
    }),
  );

const actions = (report: ReconcileReport) =>
  report.phases.flatMap((p) => p.actions.map((a) => `${a.phase}:${a.action}:${a.target}:${a.outcome}`));

describe('recipe pools built in builder VMs', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 1_500_000,
}, () => {
  let fleet: Fleet;
  let cache: string;
  const savedCacheEnv = process.env.VMKIT_CACHE_DIR;
  /** The instance reconcile creates (its id is random). */
  let path = '';
  const runFile = async () =>
    (await fleet.exec(path, ['cat', '/etc/vmkit-run.txt'])).stdout.toString().trim();
  /**
   * Processes using the scratch folders of this test's cache: qemu-img making or flattening the
   * builders' disks, and the builder VMs' QEMU once it has them.
   */
  const scratchUsers = () => processesNaming(join(cache, 'images', '.building-'));
  /** Builder VMs started by `ancestor` (this test's process, or a CLI it ran) or below it. */
  const builders = (ancestor = process.pid) => {
    const below = new Set(descendantsOf(ancestor));
    return processesNaming('vmkit-builder').filter(
      (p) => p.program.includes('qemu-system') && below.has(p.pid),
    );
  };

  before(() => {
    cache = privateCache();
    process.env.VMKIT_CACHE_DIR = cache;
    fleet = new Fleet({ dir: fleetDir });
  });

  after(async () => {
    for (const tenant of fleet.store.listTenants()) await fleet.destroyTenant(tenant.id).catch(() => {});
    await fleet.close();
    for (const leftover of [...processesNaming(fleetDir), ...processesNaming(cache)])
      await stopDetached(leftover, 0);
    if (savedCacheEnv === undefined) delete process.env.VMKIT_CACHE_DIR;
    else process.env.VMKIT_CACHE_DIR = savedCacheEnv;
    rmSync(fleetDir, { recursive: true, force: true });
    rmSync(cache, { recursive: true, force: true });
  });

  it("reconcile builds a recipe pool's image in a builder VM; its instance boots it with the run step's effect", async (t) => {
    const started = performance.now();
    const report = await fleet.reconcile(document(recipe('one')), {
      onProgress: (line) => t.diagnostic(`image: ${line}`),
    });
    t.diagnostic(
      `reconcile (build + first start) took ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    assert.equal(report.failed, 0, JSON.stringify(report.phases));
    path = report.phases.find((p) => p.phase === 'scale')?.actions[0]?.target ?? '';
    assert.match(path, /^bld\/app\/[a-z0-9-]+$/);
    assert.deepEqual(actions(report), [
      'tenants:create:bld:done',
      'pools:create:bld/app:done',
      `scale:create:${path}:done`,
    ]);
    const pool = fleet.store.pool('bld', 'app');
    assert.equal(pool.image, 'builder-test');
    assert.deepEqual(pool.recipe?.run, recipe('one').run);
    const [build] = fleet.store.poolBuilds('bld', 'app');
    assert.equal(build?.builder, 'vm');
    assert.equal(build?.cached, false);
    assert.equal(build?.revision, pool.revision);
    assert.ok((build?.buildMs ?? 0) > 0 && build?.actor, JSON.stringify(build));
    assert.equal(await runFile(), 'run step saw one');
    assert.deepEqual([...scratchUsers(), ...builders()], [], 'a builder VM or tool is still running');
  });

  it('a changed recipe is a new revision with its build recorded and the base invalidated; the running instance keeps its revision until stop/start', async () => {
    const first = fleet.store.pool('bld', 'app');
    const report = await fleet.reconcile(document(recipe('two')));
    assert.equal(report.failed, 0, JSON.stringify(report.phases));
    const second = fleet.store.pool('bld', 'app');
    assert.deepEqual(actions(report), [`pools:rebuild:bld/app@${second.revision}:done`]);
    assert.equal(report.phases[1]?.actions[0]?.detail, 'recipe builder-test changed');
    assert.notEqual(second.revision, first.revision);
    assert.deepEqual(
      fleet.store.poolBuilds('bld', 'app').map((b) => [b.revision, b.builder, b.cached]),
      [
        [first.revision, 'vm', false],
        [second.revision, 'vm', false],
      ],
    );
    assert.ok(
      readAudit(fleetDir, 'bld').some(
        (e) => e.action === 'pool.rebuild' && e.detail?.includes(second.revision),
      ),
    );
    assert.equal(
      findBase(fleetDir, second, second.revision),
      undefined,
      'a base of the new revision exists already',
    );
    assert.ok(findBase(fleetDir, second, first.revision), 'the base the running instance uses was removed');

    assert.equal(fleet.instance(path).revision, first.revision, 'the running instance moved');
    assert.equal(fleet.instance(path).state, 'Running');
    assert.equal(await runFile(), 'run step saw one');
    assert.equal(
      (await fleet.reconcile(document(recipe('two')))).changed,
      0,
      'a second run changed something',
    );

    await fleet.stop(path);
    const restarted = await fleet.start(path);
    assert.equal(restarted.revision, second.revision);
    assert.equal(await runFile(), 'run step saw two');
    assert.ok(findBase(fleetDir, second, second.revision), 'the start made no base of the new revision');
  });

  it("a failing run step fails the pool's build with the builder's output tail, and leaves no VM or pool", async () => {
    const failing = {
      base: 'debian',
      name: 'builder-fails',
      run: ['echo before-the-failure', 'echo to-stderr >&2', 'exit 7'],
    };
    const extra = { tenant: 'bld', id: 'broken', image: failing };
    const report = await fleet.reconcile(document(recipe('two'), [extra]));
    const create = report.phases
      .flatMap((p) => p.actions)
      .find((a) => a.action === 'create' && a.target === 'bld/broken');
    assert.equal(create?.outcome, 'failed');
    assert.match(
      create?.error ?? '',
      /building image builder-fails in a builder VM failed: the build exited with status 7/,
    );
    assert.match(create?.error ?? '', /\| before-the-failure\n\s+\| to-stderr/);
    assert.equal(fleet.store.findPool('bld', 'broken'), undefined);
    assert.deepEqual(
      [...scratchUsers(), ...builders()],
      [],
      'the failed build left its builder VM or a tool running',
    );
    assert.deepEqual(
      readdirSync(join(cache, 'images')).filter((name) => name.startsWith('.building-')),
      [],
      'the failed build left its scratch folder',
    );
  });

  it('SIGINT to `vmkit fleet pool create` during a builder-VM build ends the builder VM; no pool is made', async () => {
    if (!fleet.store.findTenant('bld')) fleet.createTenant({ id: 'bld', subnet: '10.76.0.0/24' });
    const file = join(cache, 'interrupted.json');
    writeFileSync(file, JSON.stringify({ base: 'debian', name: 'builder-interrupted', run: ['sleep 600'] }));
    const child = spawn(
      process.execPath,
      [cli, 'fleet', '--fleet-dir', fleetDir, 'pool', 'create', 'bld/sig', '--image', file],
      {
        cwd: root,
        env: { ...process.env, VMKIT_CACHE_DIR: cache },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr?.on('data', (chunk) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // Another process's QEMU has no event to wait for: its process list is read every 100 ms.
    const deadline = Date.now() + 300_000;
    const ofCli = () => builders(child.pid ?? 0);
    while (ofCli().length === 0 && Date.now() < deadline && child.exitCode === null) await delay(100);
    const running = ofCli();
    assert.equal(running.length, 1, `no builder VM appeared; CLI stderr:\n${stderr}`);
    child.kill('SIGINT');
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, 60_000);
    const code = await exited;
    clearTimeout(timer);
    assert.ok(!timedOut, `the CLI did not exit within 60 s of SIGINT; stderr:\n${stderr}`);
    assert.notEqual(code, 0);
    // An orphan is no longer below the CLI: the builder is looked for by its pid.
    assert.deepEqual(
      running.filter((p) => alive(p.pid)),
      [],
      'the builder VM outlived the interrupted CLI',
    );
    assert.deepEqual(scratchUsers(), [], 'a tool outlived the interrupted CLI');
    assert.equal(fleet.store.findPool('bld', 'sig'), undefined);
  });
});

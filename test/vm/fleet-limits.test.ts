// A pool that requires its resource limits (`--require-limits`, `requireLimits` in a desired
// document), on a host where they cannot be applied: cgroups not delegated to the user. As
// root, the CLI runs as the ordinary user `cloudsdk` (no delegation here); as an ordinary user,
// as itself. Its instance is refused (exit 1, one line naming each limit and why), nothing of
// it runs, its state stays consistent and the refusal is audited; a pool without the option
// would run it with a warning instead (fleet.test.ts, as an ordinary user).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { describeGroups } from '../../src/fleet/vmm/cgroups.js';
import { processesNaming } from '../../src/runtime/detached.js';
import { cli, lacks, runProgram } from '../helpers.js';

const asRoot = process.getuid?.() === 0;
const user = asRoot ? spawnSync('id', ['-u', 'cloudsdk'], { encoding: 'utf8' }) : undefined;
const userUid = user?.status === 0 ? Number(user.stdout.trim()) : undefined;
/** The user's own home and caches, not root's (runuser keeps the caller's environment). */
const userEnv = asRoot
  ? {
      HOME: spawnSync('getent', ['passwd', 'cloudsdk'], { encoding: 'utf8' }).stdout.split(':')[5] ?? '/',
      XDG_CACHE_HOME: '',
      VMKIT_CACHE_DIR: '',
      XDG_DATA_HOME: '',
    }
  : {};

/** Why this test cannot run here, or false. */
function skipReason(): string | false {
  const missing = lacks('detached') || lacks('snapshot');
  if (missing) return missing;
  if (asRoot) return userUid === undefined ? 'no user cloudsdk to run as' : false;
  return describeGroups().warnings.length === 0 ? 'cgroups are delegated to this user' : false;
}

describe('a pool that requires its limits, where they cannot be applied', {
  skip: skipReason(),
  timeout: 600_000,
}, () => {
  let dir = '';
  const fleet = (...args: string[]) => ['fleet', '--fleet-dir', dir, ...args];
  const run = (args: string[]) => {
    const command = [process.execPath, cli, ...args];
    const [program, ...rest] = asRoot ? ['runuser', '-u', 'cloudsdk', '--', ...command] : command;
    return runProgram(program as string, rest, { timeoutMs: 300_000, env: userEnv });
  };
  const json = async (args: string[]) => {
    const result = await run([...args, '--json']);
    assert.equal(result.code, 0, `vmkit ${args.join(' ')}: ${result.stderr}`);
    return JSON.parse(result.stdout) as Record<string, unknown>;
  };

  before(() => {
    dir = mkdtempSync('/tmp/vmkit-limits-');
    if (asRoot) {
      chmodSync(dir, 0o700);
      chownSync(dir, userUid as number, userUid as number);
    }
  });

  after(async () => {
    await run(fleet('tenant', 'destroy', 'strict', '--yes')).catch(() => {});
    assert.deepEqual(processesNaming(dir), [], 'a process of this fleet is left');
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses its instance with exit 1, naming each limit and why; nothing runs', async () => {
    const created = await run(fleet('tenant', 'create', 'strict', '--subnet', '10.44.0.0/24'));
    assert.equal(created.code, 0, created.stderr);
    const pool = await run(fleet('pool', 'create', 'strict/web', '--require-limits'));
    assert.equal(pool.code, 0, pool.stderr);
    assert.equal((await json(fleet('pool', 'info', 'strict/web'))).requireLimits, true);
    const { path } = (await json(fleet('instance', 'create', 'strict/web'))) as { path: string };
    const before = (await json(fleet('instance', 'info', path))).state;

    const refused = await run(fleet('instance', 'start', path));
    assert.equal(refused.code, 1, refused.stderr);
    assert.doesNotMatch(refused.stderr, /\n\s+at /, 'a stack trace');
    const said = refused.stderr.trim().split('\n').at(-1) ?? '';
    assert.match(said, /^vmkit: pool strict\/web requires its resource limits \(requireLimits\)/);
    for (const limit of ['memory', 'cpu', 'pids'])
      assert.match(said, new RegExp(`${limit} limit not applied: \\S+`));
    // Refused before anything was made: the node's cgroups, as `fleet node info` shows them.
    assert.match(said, /is not writable by uid \d+/);
    assert.doesNotMatch(refused.stderr, /making the base|QEMU up/, 'work began before the refusal');

    const after = await json(fleet('instance', 'info', path));
    assert.equal(after.state, before, 'the refused start changed the instance state');
    assert.equal(after.intent, undefined, 'the refused start left an intent');
    assert.deepEqual(processesNaming(dir), [], 'the refused start left a process');
    const audit = (await run(fleet('audit', 'strict'))).stdout;
    assert.match(audit, /"action":"start".*"outcome":"refused".*requires its resource limits/);
  });

  it('takes requireLimits from a desired document, and plans a change of it as an update', async () => {
    const doc = (requireLimits: boolean) => ({
      version: 1,
      tenants: [{ id: 'strict', subnet: '10.44.0.0/24' }],
      pools: [{ tenant: 'strict', id: 'api', requireLimits }],
    });
    const file = join(dir, 'desired.json');
    writeFileSync(file, JSON.stringify(doc(true)));
    if (asRoot) chownSync(file, userUid as number, userUid as number);
    const reconciled = await run(fleet('reconcile', file));
    assert.equal(reconciled.code, 0, reconciled.stderr);
    assert.equal((await json(fleet('pool', 'info', 'strict/api'))).requireLimits, true);
    writeFileSync(file, JSON.stringify(doc(false)));
    const plan = await run(fleet('plan', file));
    assert.equal(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, /strict\/api.*requireLimits true -> false/);
  });
});

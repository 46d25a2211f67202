import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import type { Fleet } from '../../src/fleet/fleet.js';
import { decide, POLICY_DEFAULTS, runPolicy, type Sample } from '../../src/fleet/policy/policy.js';
import type { Instance } from '../../src/fleet/state/model.js';
import { withDefaults } from '../../src/util/options.js';

const sample = (path: string, over: Partial<Sample> = {}): Sample => ({
  path,
  state: 'Running',
  pinned: false,
  critical: false,
  idleSeconds: 600,
  cpuPercent: 1,
  networkBytes: 0,
  residentMiB: 200,
  ...over,
});
const plenty = 8192;
const actions = (decisions: ReturnType<typeof decide>) =>
  Object.fromEntries(decisions.map((d) => [d.path, d.action]));

describe('sleep policy decisions', () => {
  test('idle, quiet on CPU and network: sleeps, with every reason given', () => {
    const [decision] = decide([sample('t/p/a')], plenty, POLICY_DEFAULTS);
    assert.equal(decision?.action, 'sleep');
    assert.deepEqual(decision?.reasons, ['idle 600 s >= 300 s', 'CPU 1% < 5%', 'network 0 B < 4096 B']);
  });

  test('any one sign of use keeps it', () => {
    const decisions = decide(
      [
        sample('t/p/recent', { idleSeconds: 10 }),
        sample('t/p/busy', { cpuPercent: 40 }),
        sample('t/p/talking', { networkBytes: 100_000 }),
      ],
      plenty,
      POLICY_DEFAULTS,
    );
    assert.deepEqual(actions(decisions), { 't/p/recent': 'keep', 't/p/busy': 'keep', 't/p/talking': 'keep' });
    assert.match(decisions[1]?.reasons.join(' ') ?? '', /CPU 40% >= 5%/);
  });

  test('pinned and critical instances are exempt, even under memory pressure', () => {
    const decisions = decide(
      [sample('t/p/pin', { pinned: true }), sample('t/p/crit', { critical: true })],
      10,
      POLICY_DEFAULTS,
    );
    assert.deepEqual(actions(decisions), { 't/p/pin': 'keep', 't/p/crit': 'keep' });
    assert.deepEqual(decisions[0]?.reasons, ['exempt: pinned']);
  });

  test('instances that are not Running or Warm are not considered', () => {
    assert.deepEqual(
      decide(
        [sample('t/p/s', { state: 'Sleeping' }), sample('t/p/x', { state: 'Stopped' })],
        plenty,
        POLICY_DEFAULTS,
      ),
      [],
    );
  });

  test('under memory pressure the coldest busy instances sleep first, until the shortfall is covered', () => {
    const decisions = decide(
      [
        sample('t/p/warmest', { idleSeconds: 5, cpuPercent: 50 }),
        sample('t/p/coldest', { idleSeconds: 200, cpuPercent: 50 }),
        sample('t/p/middle', { idleSeconds: 100, cpuPercent: 50 }),
      ],
      POLICY_DEFAULTS.minMemAvailableMiB - 300, // 300 MiB short: two instances of 200 MiB
      POLICY_DEFAULTS,
    );
    assert.deepEqual(actions(decisions), {
      't/p/warmest': 'keep',
      't/p/coldest': 'sleep',
      't/p/middle': 'sleep',
    });
    assert.match(decisions[1]?.reasons.at(-1) ?? '', /memory pressure: MemAvailable 724 MiB < 1024 MiB/);
  });

  test('idle instances that sleep anyway count against the shortfall', () => {
    const decisions = decide(
      [sample('t/p/idle'), sample('t/p/busy', { idleSeconds: 1, cpuPercent: 90 })],
      POLICY_DEFAULTS.minMemAvailableMiB - 150,
      POLICY_DEFAULTS,
    );
    assert.deepEqual(actions(decisions), { 't/p/idle': 'sleep', 't/p/busy': 'keep' });
  });
});

describe('running the sleep policy', () => {
  const idleFor = (seconds: number): Instance => ({
    seq: 1,
    tenant: 't',
    pool: 'p',
    id: 'i1',
    path: 't/p/i1',
    state: 'Running',
    address: '10.20.0.2/24',
    mac: '52:54:00:00:00:01',
    revision: 'r',
    pinned: false,
    critical: false,
    warnings: [],
    createdAt: new Date(0).toISOString(),
    updatedAt: new Date(Date.now() - seconds * 1000).toISOString(),
  });
  /** A fleet with one instance and no VMM process: 0% CPU, 0 bytes, no memory. */
  const fakeFleet = (dir: string, slept: string[]) =>
    ({
      dir,
      store: { listInstances: () => [idleFor(100_000)] },
      sleep: async (path: string) => void slept.push(path),
    }) as unknown as Fleet;

  test('thresholds the CLI leaves out (passed as undefined) keep their defaults', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-policy-'));
    try {
      const slept: string[] = [];
      const started = Date.now();
      // Exactly what `vmkit fleet policy run` passes when no threshold flag is given.
      const decisions = await runPolicy(fakeFleet(dir, slept), {
        dryRun: undefined,
        idleSeconds: undefined,
        cpuPercent: undefined,
        networkBytes: undefined,
        minMemAvailableMiB: undefined,
        sampleMs: undefined,
      });
      assert.ok(Date.now() - started >= POLICY_DEFAULTS.sampleMs - 50, 'sampled over the default window');
      assert.deepEqual(slept, ['t/p/i1']);
      assert.match(
        decisions[0]?.reasons.join('; ') ?? '',
        /^idle 10000\d s >= 300 s; CPU 0% < 5%; network 0 B < 4096 B$/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('out-of-range thresholds are a ConfigError before anything is sampled', async () => {
    const fleet = fakeFleet('/nonexistent', []);
    await assert.rejects(runPolicy(fleet, { sampleMs: 0 }), ConfigError);
    await assert.rejects(runPolicy(fleet, { idleSeconds: -1 }), /idleSeconds: must be a whole number/);
    await assert.rejects(runPolicy(fleet, { cpuPercent: Number.NaN }), ConfigError);
  });

  test('withDefaults lays only defined values over the defaults', () => {
    assert.deepEqual(withDefaults({ a: 1, b: 2, c: 3 }, { a: undefined, b: 5 }), { a: 1, b: 5, c: 3 });
    assert.deepEqual(withDefaults({ a: 1 }, undefined), { a: 1 });
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decide, POLICY_DEFAULTS, type Sample } from '../../src/fleet/policy.js';

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

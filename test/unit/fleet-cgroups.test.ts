import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ancestry, type GroupFacts, parseProcCgroup, planV2 } from '../../src/fleet/vmm/cgroup-plan.js';
import {
  applyLimits,
  type CgroupHost,
  describeGroups,
  HOST_CGROUPS,
  prepareGroups,
} from '../../src/fleet/vmm/cgroups.js';

const ALL = ['cpuset', 'cpu', 'io', 'memory', 'pids'];
const group = (path: string, facts: Partial<GroupFacts> = {}): GroupFacts => ({
  path,
  writable: true,
  procs: [],
  controllers: ALL,
  subtree: [],
  ...facts,
});
const LIMITS = { memoryMiB: 384, cpus: 2, pids: 256 };

describe('cgroup v2 placement plan', () => {
  it('moves vmkit into a leaf of its own group when that group holds only vmkit (a Delegate=yes unit)', () => {
    const plan = planV2({
      chain: [group('/system.slice/vmkit.service', { procs: [10, 11] }), group('/system.slice'), group('/')],
      ours: [10, 11],
      uid: 0,
    });
    assert.equal(plan.base, '/system.slice/vmkit.service');
    assert.deepEqual(plan.move, [10, 11]);
    assert.deepEqual(plan.enable, ['/system.slice/vmkit.service']);
    assert.deepEqual(plan.warnings, []);
  });

  it('finds the base again once vmkit sits in its supervisor leaf', () => {
    const plan = planV2({
      chain: [group('/a.service/vmkit-supervisor', { procs: [10] }), group('/a.service'), group('/')],
      ours: [10],
      uid: 0,
    });
    assert.equal(plan.base, '/a.service');
    assert.deepEqual(plan.move, []);
  });

  it("as root beside a login shell, uses a group of vmkit's own at the top, never the shell's scope", () => {
    const plan = planV2({
      chain: [
        group('/user.slice/user-0.slice/session-3.scope', { procs: [5, 10] }),
        group('/user.slice/user-0.slice'),
        group('/user.slice'),
        group('/', { procs: [1] }),
      ],
      ours: [10],
      uid: 0,
    });
    assert.equal(plan.base, '/vmkit');
    assert.deepEqual(plan.enable, ['/', '/vmkit']);
    assert.deepEqual(plan.move, []);
    assert.match(plan.why, /holds 1 other process; limits on vmkit's own group do not cover/);
  });

  it("as a user inside user@UID.service, uses the delegated subtree's top", () => {
    const plan = planV2({
      chain: [
        group('/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope', { procs: [7, 10] }),
        group('/user.slice/user-1000.slice/user@1000.service/app.slice'),
        group('/user.slice/user-1000.slice/user@1000.service', { controllers: ['cpu', 'memory', 'pids'] }),
        group('/user.slice/user-1000.slice', { writable: false }),
        group('/user.slice', { writable: false }),
        group('/', { writable: false, procs: [1] }),
      ],
      ours: [10],
      uid: 1000,
    });
    assert.equal(plan.base, '/user.slice/user-1000.slice/user@1000.service/vmkit');
    assert.deepEqual(plan.warnings, []);
  });

  it('as a user in a login session scope (not delegated), warns and applies nothing', () => {
    const plan = planV2({
      chain: [
        group('/user.slice/user-1000.slice/session-3.scope', { writable: false, procs: [5, 10] }),
        group('/user.slice/user-1000.slice', { writable: false }),
        group('/user.slice', { writable: false }),
        group('/', { writable: false }),
      ],
      ours: [10],
      uid: 1000,
    });
    assert.equal(plan.base, '');
    assert.deepEqual(plan.missing, ['memory', 'cpu', 'pids']);
    assert.match(
      plan.warnings[0] ?? '',
      /not delegated|no group above it is delegated to uid 1000.*systemd-run --user/,
    );
  });

  it('names a controller the delegated group does not have', () => {
    const plan = planV2({
      chain: [group('/u@1000.service/x.scope', { procs: [10], controllers: ['memory', 'pids'] })],
      ours: [10],
      uid: 1000,
    });
    assert.deepEqual(plan.missing, ['cpu']);
    assert.match(
      plan.warnings[0] ?? '',
      /^cpu limit not applied: .*not available in \/u@1000.service\/x.scope/,
    );
  });

  it("counts as vmkit's own this process and those it started, not others", () => {
    const child = spawn('sleep', ['10']);
    try {
      const pid = child.pid as number;
      assert.deepEqual(HOST_CGROUPS.ours([1, pid, process.pid, process.ppid]), [pid, process.pid]);
    } finally {
      child.kill();
    }
  });

  it('parses /proc/self/cgroup of v1, hybrid and v2 hosts', () => {
    const groups = parseProcCgroup('12:pids:/a\n4:memory:/p/q\n1:cpu,cpuacct:/c\n1:name=systemd:/s\n0::/u\n');
    assert.equal(groups.get('memory'), '/p/q');
    assert.equal(groups.get('cpu'), '/c');
    assert.equal(groups.get('cpuacct'), '/c');
    assert.equal(groups.get(''), '/u');
    assert.deepEqual(ancestry('/a/b'), ['/a/b', '/a', '/']);
  });
});

describe('cgroup file work on a fake tree', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'vmkit-cgroups-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  /** A v2 tree with vmkit (pid 10) alone in `own`, or beside pid 5. */
  function v2Tree(name: string, own: string, procs: number[]): CgroupHost {
    const root = join(scratch, name);
    for (const path of ancestry(own)) {
      mkdirSync(join(root, path), { recursive: true });
      writeFileSync(join(root, path, 'cgroup.controllers'), ALL.join(' '));
      writeFileSync(join(root, path, 'cgroup.subtree_control'), '');
      writeFileSync(join(root, path, 'cgroup.procs'), path === own ? procs.join('\n') : '');
    }
    return { root, procCgroup: () => `0::${own}\n`, uid: 0, ours: (pids) => pids.filter((p) => p === 10) };
  }

  it('v2: moves vmkit to a leaf, enables the controllers for children, makes the VMM leaf with its limits', () => {
    const host = v2Tree('alone', '/system.slice/vmkit.service', [10]);
    const placement = applyLimits('vmm-a', 4242, LIMITS, host);
    const own = join(host.root, 'system.slice/vmkit.service');
    assert.deepEqual(placement, { groups: [join(own, 'vmm-a')], warnings: [] });
    assert.equal(readFileSync(join(own, 'vmkit-supervisor', 'cgroup.procs'), 'utf8'), '10');
    // The fake files keep the last write only: each controller was written on its own.
    assert.equal(readFileSync(join(own, 'cgroup.subtree_control'), 'utf8'), '+pids');
    const leaf = (file: string) => readFileSync(join(own, 'vmm-a', file), 'utf8');
    assert.equal(leaf('memory.max'), String(384 * 2 ** 20));
    assert.equal(leaf('cpu.max'), '200000 100000');
    assert.equal(leaf('pids.max'), '256');
    assert.equal(leaf('cgroup.procs'), '4242');
  });

  it("v2: beside another process, makes /vmkit at the top and leaves vmkit's group alone", () => {
    const host = v2Tree('shared', '/user.slice/user-0.slice/session-1.scope', [5, 10]);
    const placement = prepareGroups('vmm-b', LIMITS, host);
    assert.deepEqual(placement, { groups: [join(host.root, 'vmkit', 'vmm-b')], warnings: [] });
    assert.ok(!existsSync(join(host.root, 'user.slice/user-0.slice/session-1.scope/vmkit-supervisor')));
    assert.equal(readFileSync(join(host.root, 'vmkit', 'vmm-b', 'pids.max'), 'utf8'), '256');
    assert.ok(!existsSync(join(host.root, 'vmkit', 'vmm-b', 'cgroup.procs')), 'prepared, nobody moved in');
    assert.match(describeGroups(host).vmmGroups, /^cgroup v2, under \/vmkit/);
  });

  it('v1: a group per controller under vmkit own, as before', () => {
    const root = join(scratch, 'v1');
    for (const c of ['memory', 'cpu', 'pids']) mkdirSync(join(root, c, 'x'), { recursive: true });
    const host: CgroupHost = {
      root,
      procCgroup: () => '4:memory:/x\n2:cpu,cpuacct:/x\n1:name=systemd:/\n',
      uid: 0,
      ours: () => [],
    };
    const placement = applyLimits('vmm-c', 77, LIMITS, host);
    assert.deepEqual(placement.groups, [join(root, 'memory/x/vmm-c'), join(root, 'cpu/x/vmm-c')]);
    assert.deepEqual(placement.warnings, [
      'pids limit not applied: no cgroup v1 pids hierarchy on this host',
    ]);
    assert.equal(readFileSync(join(root, 'cpu/x/vmm-c/cpu.cfs_quota_us'), 'utf8'), '200000');
    assert.equal(readFileSync(join(root, 'memory/x/vmm-c/cgroup.procs'), 'utf8'), '77');
  });
});

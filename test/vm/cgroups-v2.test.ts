// The fleet's cgroup code on a real cgroup v2 hierarchy: this host has v1 only, a Debian guest
// boots systemd with the unified hierarchy. The code is transpiled from src/ as it is now and run
// in the guest by the host's node (it needs only glibc, libstdc++ and libgcc, which Debian has),
// against real processes; each limit is read back and then hit.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import ts from 'typescript';
import { type Machine, startMachine } from '../../src/index.js';
import { lacks, root } from '../helpers.js';

const DIR = '/opt/vmkit';
const MiB = 2 ** 20;

/**
 * The modules the guest runs, as ES modules laid out as in the repository: the two drivers, the
 * RAM filler's child entry, and every module they import at run time (found in the transpiled output, so type-only imports,
 * which transpiling drops, pull nothing in). They must need no package: the guest has none.
 */
function transpiled(): string {
  const out = mkdtempSync(join(tmpdir(), 'vmkit-cgroup-guest-'));
  // ram-fill-host.ts is not imported but run as a child process of its own.
  const queue = [
    'test/fixtures/cgroup-driver.ts',
    'test/fixtures/ram-fill-driver.ts',
    'src/fleet/vmm/ram-fill-host.ts',
  ];
  const done = new Set<string>();
  for (let source = queue.shift(); source !== undefined; source = queue.shift()) {
    if (done.has(source)) continue;
    done.add(source);
    const { outputText } = ts.transpileModule(readFileSync(join(root, source), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    mkdirSync(dirname(join(out, source)), { recursive: true });
    writeFileSync(join(out, source.replace(/\.ts$/, '.js')), outputText);
    for (const [, specifier] of outputText.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)\.js'/g)) {
      queue.push(join(dirname(source), `${specifier}.ts`));
    }
  }
  writeFileSync(join(out, 'package.json'), '{"type":"module"}\n');
  return out;
}

interface Run {
  placement: { groups: string[]; warnings: string[] };
  /** What `fleet node info` says of cgroups there. */
  described: { vmmGroups: string; warnings: string[] };
  vmkitGroup: string;
  childGroup: string;
  /** The leaf's limit and event files, read as the command ended. */
  files: Record<string, string>;
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

describe('cgroup v2 in a Debian guest', { skip: lacks('snapshot') }, () => {
  let vm: Machine;
  let scratch: string;

  before(async () => {
    scratch = transpiled();
    vm = await startMachine({ name: 'cg2', image: 'debian', memoryMiB: 768, timeoutMs: 300_000 });
    await vm.waitForUnit('multi-user.target', { timeoutMs: 300_000 });
    await vm.copyToVm(scratch, DIR, { timeoutMs: 60_000 });
    await vm.copyToVm(process.execPath, `${DIR}/node`, { timeoutMs: 240_000 });
    await vm.succeed(`chmod 755 ${DIR} ${DIR}/node && ${DIR}/node --version`, { timeoutMs: 60_000 });
  });

  after(async () => {
    await vm?.[Symbol.asyncDispose]();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  /** Runs the driver for `command` in the guest, vmkit's process started by `launcher`. */
  async function drive(launcher: string, name: string, limits: object, command: string): Promise<Run> {
    const spec = JSON.stringify({ name, limits, command, timeoutMs: 60_000 });
    const out = await vm.succeed(`${launcher} ${DIR}/node ${DIR}/test/fixtures/cgroup-driver.js '${spec}'`, {
      timeoutMs: 120_000,
    });
    return JSON.parse(out.trim().split('\n').at(-1) as string) as Run;
  }

  it('in a delegated unit: vmkit moves into a leaf, no EBUSY, and the limits read back and hold', async () => {
    assert.match(await vm.succeed('cat /sys/fs/cgroup/cgroup.controllers'), /memory/, 'not a v2 hierarchy');
    const run = await drive(
      'systemd-run --quiet --wait --pipe --collect -p Delegate=yes',
      'vmm-pids',
      { memoryMiB: 64, cpus: 0.5, pids: 8 },
      // 30 background sleeps: the group may hold 8 tasks (this shell included).
      'for i in $(seq 1 30); do sleep 3 & done; wait; echo done',
    );
    assert.deepEqual(run.placement.warnings, [], 'no warning, EBUSY or other');
    const [leaf] = run.placement.groups;
    assert.ok(leaf, 'a group was made');
    const base = leaf.replace(/\/vmm-pids$/, '');
    assert.match(base, /^\/sys\/fs\/cgroup\/system\.slice\/run-.*\.service$/);
    assert.match(run.vmkitGroup, /^0::\/system\.slice\/run-.*\.service\/vmkit-supervisor$/);
    assert.equal(run.childGroup, `0::${leaf.replace('/sys/fs/cgroup', '')}`);
    assert.equal(run.files['memory.max'], String(64 * MiB));
    assert.equal(run.files['cpu.max'], '50000 100000');
    assert.equal(run.files['pids.max'], '8');
    assert.match(run.stderr, /fork|Resource temporarily unavailable/i, 'a fork over pids.max failed');
    assert.ok(Number(run.files['pids.events']?.split(' ')[1]) > 0, 'pids.events counts refusals');
  });

  it('memory over memory.max is OOM-killed in its group, and CPU is throttled to cpu.max', async () => {
    const run = await drive(
      '',
      'vmm-memory',
      { memoryMiB: 32, cpus: 0.2, pids: 64 },
      // tail holds a line of 200 MiB with no newline in it; then a second of busy loop.
      'head -c 200M /dev/zero | tail -n 1 > /dev/null; echo "tail: $?"; timeout 2 sh -c "while :; do :; done"; echo busy done',
    );
    const [leaf] = run.placement.groups;
    assert.ok(leaf, `a group was made (${run.placement.warnings.join('; ')})`);
    // The backdoor shell's group holds other processes: vmkit used a group of its own at the top.
    assert.equal(leaf, '/sys/fs/cgroup/vmkit/vmm-memory');
    assert.deepEqual(run.placement.warnings, []);
    assert.match(run.stdout, /tail: 137/, 'tail was killed (SIGKILL)');
    const events = run.files['memory.events'] ?? '';
    assert.ok(Number(/oom_kill (\d+)/.exec(events)?.[1]) >= 1, `no oom_kill in ${events}`);
    assert.equal(run.files['memory.max'], String(32 * MiB));
    assert.equal(run.files['cpu.max'], '20000 100000');
    const throttled = Number(/nr_throttled (\d+)/.exec(run.files['cpu.stat'] ?? '')?.[1]);
    assert.ok(throttled > 0, 'the busy loop was throttled');
  });

  it('as an ordinary user outside any delegated subtree: a warning, no limits, the process still runs', async () => {
    await vm.succeed('id alice >/dev/null 2>&1 || useradd -m alice');
    const run = await drive(
      'runuser -u alice --',
      'vmm-user',
      { memoryMiB: 32, cpus: 1, pids: 16 },
      'echo ran',
    );
    assert.deepEqual(run.placement.groups, []);
    assert.match(
      run.placement.warnings.join('\n'),
      /no group above it is delegated to uid \d+.*systemd-run --user/,
    );
    assert.deepEqual(run.described.warnings, run.placement.warnings, 'node info shows the same warning');
    assert.equal(run.described.vmmGroups, 'none');
    assert.equal(run.status, 0);
    assert.match(run.stdout, /ran/);
  });

  it("as an ordinary user in a scope systemd delegated to it: the VMM's limits apply under user@UID.service", async () => {
    const uid = (await vm.succeed('id -u alice')).trim();
    await vm.succeed(`loginctl enable-linger alice && systemctl start user@${uid}.service`, {
      timeoutMs: 60_000,
    });
    const run = await drive(
      `runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/${uid} systemd-run --user --quiet --scope -p Delegate=yes`,
      'vmm-alice',
      { memoryMiB: 48, cpus: 1, pids: 8 },
      'for i in $(seq 1 30); do sleep 3 & done; wait',
    );
    assert.deepEqual(run.placement.warnings, [], JSON.stringify(run.described));
    const [leaf] = run.placement.groups;
    assert.match(
      leaf ?? '',
      new RegExp(`^/sys/fs/cgroup/user.slice/user-${uid}.slice/user@${uid}.service/.*/vmm-alice$`),
    );
    assert.match(run.vmkitGroup, /\/vmkit-supervisor$/);
    assert.equal(run.files['memory.max'], String(48 * MiB));
    assert.equal(run.files['pids.max'], '8');
    assert.match(run.stderr, /fork|Resource temporarily unavailable/i, 'a fork over pids.max failed');
  });

  it("the guest RAM copy counts against the VMM's group: filled by a child in it, not by vmkit", async () => {
    const out = await vm.succeed(
      `systemd-run --quiet --wait --pipe --collect -p Delegate=yes ${DIR}/node ${DIR}/test/fixtures/ram-fill-driver.js vmm-ram 24`,
      { timeoutMs: 120_000 },
    );
    const run = JSON.parse(out.trim().split('\n').at(-1) as string);
    assert.deepEqual(run.placement.warnings, []);
    assert.ok(
      run.afterChild - run.before >= run.bytes * 0.95,
      `the group was charged ${run.afterChild - run.before} of ${run.bytes} bytes`,
    );
    assert.ok(
      run.afterOwn - run.afterChild < run.bytes / 10,
      'a copy by vmkit itself is not charged to the group',
    );
  });
});

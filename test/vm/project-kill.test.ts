// `vmkit up` killed (kill -9) at each named step of a project VM's start (the VMKIT_TEST_KILL_AT
// hook: no timing guesses), then status, up, sync, exec, down, up: the next command settles the
// cut-off start, status and state.json agree, synced files survive, no half snapshot or QEMU stays.
// And sync refuses while /work is not mounted from the data disk.
import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { KILL_AT_ENV } from '../../src/util/kill-point.js';
import { cli, lacks, runProgram } from '../helpers.js';

const project = mkdtempSync('/tmp/vmkit-pkill-');
const vmDir = join(project, '.vmkit', 'a');
const vmkit = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  runProgram(process.execPath, [cli, ...args], { cwd: project, input: '', env, timeoutMs: 240_000 });
const ok = async (args: string[]) => {
  const result = await vmkit(args);
  assert.equal(result.code, 0, `vmkit ${args.join(' ')}: ${result.stderr}`);
  return result;
};
const config = (provision: string[]) =>
  writeFileSync(
    join(project, 'vmkit.config.json'),
    JSON.stringify({
      vms: {
        a: {
          image: 'tiny',
          memoryMiB: 160,
          diskMiB: 32,
          sync: [{ host: 'src', guest: '/work/src' }],
          provision,
        },
      },
    }),
  );
const leftovers = () => {
  const root = join(vmDir, 'snapshots');
  return existsSync(root) ? readdirSync(root).filter((name) => name.startsWith('.')) : [];
};
/** QEMU and hub processes of this project (they name its folder on their command lines). */
const processes = () => processesNaming(project);

after(async () => {
  for (const leftover of processesNaming(project)) await stopDetached(leftover, 0);
  rmSync(project, { recursive: true, force: true });
});

/** Where `vmkit up` is killed, in the order it gets there. */
const POINTS = [
  'up:begun',
  'up:QEMU started',
  'up:agent answers',
  'up:work mounted',
  'up:provision command done',
  'snapshot:state saved',
  'snapshot:old one moved aside',
];

describe('project VM: up killed at each step, then repaired', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 1_500_000,
}, () => {
  const synced = new Map<string, string>();
  mkdirSync(join(project, 'src'));

  for (const [round, point] of POINTS.entries()) {
    it(`up killed at "${point}"`, async () => {
      // A changed provision command makes up provision and save its clean snapshot again.
      config([`echo round-${round} >> /work/provisioned`]);
      await ok(['down']);
      const killed = await vmkit(['up'], { [KILL_AT_ENV]: point });
      assert.equal(killed.code, null, `up did not reach "${point}" (exit ${killed.code}): ${killed.stderr}`);

      const status = await ok(['status', '--json']);
      const [a] = JSON.parse(status.stdout) as Array<{ state: string; snapshots: string[] }>;
      const statePath = join(vmDir, 'state.json');
      const state = existsSync(statePath)
        ? (JSON.parse(readFileSync(statePath, 'utf8')) as { running?: boolean })
        : { running: false };
      // Cut off before its data disk was made, a VM that never ran does not exist yet.
      const expected = round === 0 && point === 'up:begun' ? 'absent' : 'stopped';
      assert.equal(a?.state, expected, `after the kill, status says ${a?.state}: ${status.stderr}`);
      assert.equal(state.running, false, 'state.json says running, status says stopped');
      assert.match(status.stderr, /repaired VM a: up by pid \d+/);
      assert.deepEqual(leftovers(), [], 'a half-taken snapshot stayed');
      // The clean snapshot of the rounds before is kept (put back when it was being replaced).
      assert.deepEqual(a?.snapshots, round === 0 ? [] : ['clean']);
      assert.deepEqual(processes(), [], 'a QEMU or hub of the cut-off up is left');

      const up = await ok(['up']);
      assert.match(up.stderr, /VM a is up/, 'up did not start over');
      const name = `round-${round}.txt`;
      synced.set(name, `${point}\n`);
      writeFileSync(join(project, 'src', name), `${point}\n`);
      const sync = await ok(['sync']);
      assert.match(sync.stderr, /1 sent/);
      assert.match((await ok(['exec', '--', 'ls', '/work/src'])).stdout, new RegExp(name));
      await ok(['down']);
      assert.deepEqual(processes(), [], 'down left a process');
      await ok(['up']);
      for (const [file, content] of synced) {
        assert.equal((await ok(['exec', '--', 'cat', `/work/src/${file}`])).stdout, content);
      }
      assert.match((await ok(['sync'])).stderr, /0 sent/);
      assert.deepEqual(leftovers(), []);
    });
  }

  it('snapshot save killed with the guest paused: the next command resumes it', async () => {
    config([`echo round-${POINTS.length - 1} >> /work/provisioned`]); // as the last round left it
    await ok(['up']);
    const killed = await vmkit(['snapshot', 'save', 'mid'], { [KILL_AT_ENV]: 'snapshot:state saved' });
    assert.equal(killed.code, null, killed.stderr);
    const status = await ok(['status', '--json']);
    const [a] = JSON.parse(status.stdout) as Array<{ state: string; snapshots: string[] }>;
    assert.equal(a?.state, 'running');
    assert.match(status.stderr, /repaired VM a: snapshot by pid \d+.*the VM runs on/);
    assert.deepEqual(a?.snapshots, ['clean']);
    assert.deepEqual(leftovers(), []);
    assert.equal((await ok(['exec', '--', 'echo', 'answers'])).stdout, 'answers\n');
  });

  it('sync refuses while /work is not mounted from the data disk; up mounts it again', async () => {
    config([`echo round-${POINTS.length - 1} >> /work/provisioned`]); // as the last round left it
    await ok(['up']);
    await ok(['exec', '--', 'umount', '-l', '/work']); // lazily: the exec runs in /work/src
    writeFileSync(join(project, 'src', 'late.txt'), 'late\n');
    const refused = await vmkit(['sync']);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /\/work is not mounted from its data disk \/dev\/vda/);
    assert.match((await ok(['up'])).stderr, /already up/);
    assert.match((await ok(['sync'])).stderr, /1 sent/);
    assert.equal((await ok(['exec', '--', 'cat', '/work/src/late.txt'])).stdout, 'late\n');
    await ok(['down']);
    assert.deepEqual(processes(), []);
  });
});

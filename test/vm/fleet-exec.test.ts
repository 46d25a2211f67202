// Concurrent exec on fleet instances (issue #20 item 19): QEMU's sockets take one client each,
// so commands share one agent connection within a process and take turns across processes.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { agentTurnKey } from '../../src/backends/qemu/agent-attach.js';
import { OwnedElsewhereError } from '../../src/errors.js';
import { Fleet } from '../../src/fleet/fleet.js';
import { auditPath } from '../../src/fleet/state/audit.js';
import { instanceDir, vmStatus } from '../../src/fleet/vmm/vm.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { takeTurn } from '../../src/util/turn.js';
import { cli, lacks, runProgram } from '../helpers.js';

// Short: instance sockets live in the fleet folder and unix socket paths stop at 107 bytes.
const dir = mkdtempSync('/tmp/vmkit-fexec-');
const paths = ['alpha/web/e1', 'alpha/web/e2'];
const echo = (i: number) => ['sh', '-c', `echo ${i}`];

describe('concurrent exec on fleet instances', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 600_000,
}, () => {
  let fleet: Fleet;

  before(async () => {
    fleet = new Fleet({ dir });
    fleet.createTenant({ id: 'alpha', subnet: '10.73.0.0/24' });
    await fleet.createPool({ tenant: 'alpha', id: 'web', memoryMiB: 128 });
    for (const path of paths) {
      await fleet.createInstance('alpha/web', path.split('/')[2]);
      assert.equal((await fleet.start(path)).state, 'Running');
    }
  });

  after(async () => {
    for (const tenant of fleet.store.listTenants()) await fleet.destroyTenant(tenant.id).catch(() => {});
    await fleet.close();
    for (const leftover of processesNaming(dir)) await stopDetached(leftover, 0);
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs 100 concurrent execs over two instances in one process, each with its own result', async () => {
    const started = performance.now();
    // Half of them streamed, as the fleet agent runs them (it caps their output).
    const results = await Promise.allSettled(
      Array.from({ length: 100 }, (_, i) =>
        fleet.exec(paths[i % 2] as string, echo(i), 60_000, i % 4 < 2 ? undefined : { maxOutputBytes: 4096 }),
      ),
    );
    const ms = performance.now() - started;
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [`${i}: ${r.reason}`] : []));
    assert.deepEqual(failed.slice(0, 3), [], `${failed.length} of 100 failed`);
    for (const [i, r] of results.entries()) {
      assert.ok(r.status === 'fulfilled');
      assert.deepEqual([r.value.status, r.value.stdout.toString()], [0, `${i}\n`]);
    }
    process.stderr.write(
      `100 concurrent execs over 2 instances: ${Math.round(ms)} ms, ${Math.round(100_000 / ms)}/s\n`,
    );
  });

  it("leaves QMP free while commands run: the instance's status answers meanwhile", async () => {
    const path = paths[0] as string;
    const long = fleet.exec(path, ['sh', '-c', 'sleep 2; echo done']);
    const seq = fleet.instance(path).seq;
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(await vmStatus(instanceDir(dir, seq), path), 'running');
    assert.equal((await long).stdout.toString(), 'done\n');
  });

  it('runs 30 concurrent `fleet instance exec` CLI processes on one instance', async () => {
    const started = performance.now();
    const runs = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        runProgram(
          process.execPath,
          [cli, 'fleet', '--fleet-dir', dir, 'instance', 'exec', paths[0] as string, 'echo', `n${i}`],
          {
            timeoutMs: 300_000,
          },
        ),
      ),
    );
    const ms = performance.now() - started;
    const failed = runs.flatMap((r, i) => (r.code !== 0 ? [`${i}: code ${r.code}: ${r.stderr.trim()}`] : []));
    assert.deepEqual(failed.slice(0, 3), [], `${failed.length} of 30 failed`);
    for (const [i, r] of runs.entries()) assert.equal(r.stdout, `n${i}\n`);
    process.stderr.write(`30 concurrent CLI execs on one instance: ${Math.round(ms)} ms\n`);
  });

  it('sleeps an instance once the execs in flight end, refusing new ones meanwhile; wakes to run more', async () => {
    const path = paths[1] as string;
    let running!: () => void;
    const started = new Promise<void>((resolve) => {
      running = resolve;
    });
    const first = fleet.exec(path, ['sh', '-c', 'echo go; sleep 1; echo 0'], 60_000, {
      onStdout: () => running(),
    });
    await started; // the first one runs in the guest: the instance's agent is open
    const inFlight = [first, ...Array.from({ length: 9 }, (_, i) => fleet.exec(path, echo(i + 1)))];
    const sleeping = fleet.sleep(path);
    await assert.rejects(fleet.exec(path, echo(99)), /under a sleep/);
    const results = await Promise.all(inFlight);
    for (const [i, r] of results.entries()) assert.equal(r.stdout.toString(), i === 0 ? 'go\n0\n' : `${i}\n`);
    assert.equal((await sleeping).state, 'Sleeping');
    assert.equal((await fleet.wake(path)).state, 'Running');
    const woken = await Promise.all(Array.from({ length: 10 }, (_, i) => fleet.exec(path, echo(i))));
    for (const [i, r] of woken.entries()) assert.equal(r.stdout.toString(), `${i}\n`);
  });

  it('waits for a turn another client holds, and says so when its timeout passes', async () => {
    const path = paths[0] as string;
    const dirOf = instanceDir(dir, fleet.instance(path).seq);
    const held = await takeTurn(agentTurnKey(dirOf), 1000, 'the test', 'a test holding the agent');
    await assert.rejects(
      fleet.exec(path, ['true'], 1500),
      /turn on the agent of alpha\/web\/e1[\s\S]*another client holds it \(pid \d+: a test holding the agent\)/,
    );
    const waiting = fleet.exec(path, echo(7), 30_000);
    setTimeout(() => held.release(), 500);
    assert.equal((await waiting).stdout.toString(), '7\n');
  });

  it('an instance as a Machine: its calls audited, other processes wait for it, the instance runs on after', async () => {
    const path = paths[0] as string;
    const machine = await fleet.machine(path);
    let fromCli: ReturnType<typeof runProgram> | undefined;
    try {
      assert.equal(await machine.succeed('echo from-machine'), 'from-machine\n');
      const local = join(dir, 'note.txt');
      writeFileSync(local, 'a note\n');
      await machine.copyToVm(local, '/tmp/note.txt');
      await machine.waitForFile('/tmp/note.txt', { timeoutMs: 10_000 });
      await machine.copyFromVm('/tmp/note.txt', join(dir, 'back.txt'));
      assert.equal(readFileSync(join(dir, 'back.txt'), 'utf8'), 'a note\n');
      // Its console is the instance's console log, read as it grows.
      await machine.succeed('echo console-mark-e1 > /dev/console');
      await machine.waitForConsoleText('console-mark-e1', { timeoutMs: 10_000 });
      // Commands of this process share the held agent; another process waits for its turn.
      assert.equal((await fleet.exec(path, echo(5))).stdout.toString(), '5\n');
      fromCli = runProgram(
        process.execPath,
        [cli, 'fleet', '--fleet-dir', dir, 'instance', 'exec', path, 'echo', 'after'],
        {
          timeoutMs: 120_000,
        },
      );
      const early = await Promise.race([
        fromCli.then(() => 'finished'),
        new Promise((r) => setTimeout(() => r('waiting'), 1500)),
      ]);
      assert.equal(early, 'waiting', 'the CLI waits while the machine holds the agent');
      await assert.rejects(machine.shutdown(), (error: Error) => {
        assert.ok(error instanceof OwnedElsewhereError, String(error));
        assert.match(
          error.message,
          /it is fleet instance alpha\/web\/e1.*vmkit fleet instance stop\|sleep alpha\/web\/e1/,
        );
        return true;
      });
      await assert.rejects(machine.snapshot(), OwnedElsewhereError);
    } finally {
      await machine.close();
    }
    const after = await fromCli;
    assert.deepEqual([after?.code, after?.stdout], [0, 'after\n'], after?.stderr);
    assert.equal(fleet.instance(path).state, 'Running');
    const audit = readFileSync(auditPath(dir, 'alpha'), 'utf8');
    assert.match(audit, /"action":"machine","target":"alpha\/web\/e1","outcome":"ok"/);
    assert.match(
      audit,
      /"action":"exec","target":"alpha\/web\/e1","outcome":"ok","detail":"echo from-machine -> status 0"/,
    );
  });

  it('stop does not wait for a command in flight: the command fails saying its VMM ended', async () => {
    const path = paths[0] as string;
    let running!: () => void;
    const started = new Promise<void>((resolve) => {
      running = resolve;
    });
    const long = fleet.exec(path, ['sh', '-c', 'echo go; sleep 60'], 120_000, { onStdout: () => running() });
    long.catch(() => {});
    await started;
    const before = performance.now();
    assert.equal((await fleet.stop(path)).state, 'Stopped');
    assert.ok(performance.now() - before < 30_000, 'the stop waited for the command');
    await assert.rejects(long, /its VMM ended|VMM of .* is not running/);
  });
});

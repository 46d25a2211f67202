// The fleet agent end to end on real tiny guests: reconcile over mTLS from empty to two tenants,
// exec/sleep/wake through the API, idempotence, scale down and up (a Stopped instance starts
// before any is created), prune, kill -9 of a CLI reconcile at a random phase and a converging
// rerun, and a shutdown that leaves instances running.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { initCerts } from '../../src/fleet/agent/certs.js';
import { AgentCallError, type AgentClient, connectAgent } from '../../src/fleet/agent/client.js';
import { type AgentServer, startAgent } from '../../src/fleet/agent/server.js';
import { Fleet } from '../../src/fleet/fleet.js';
import { instanceDir, vmProcesses } from '../../src/fleet/vmm/vm.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { cli, lacks, runCli, runProgram } from '../helpers.js';

// Short: instance sockets live in the fleet folder and unix socket paths stop at 107 bytes.
const dir = mkdtempSync('/tmp/vmkit-agent-');
const fleetDir = join(dir, 'f');
const certs = join(dir, 'certs');
const desired = join(dir, 'fleet.yaml');

function writeDoc(pools: Array<[string, string, number]>, tenants = ['acme', 'globex']): void {
  const subnets: Record<string, string> = {
    acme: '10.91.0.0/24',
    globex: '10.92.0.0/24',
    initech: '10.93.0.0/24',
  };
  writeFileSync(
    desired,
    [
      'version: 1',
      'tenants:',
      ...tenants.map((t) => `  - { id: ${t}, subnet: ${subnets[t]}, quotas: { maxRunning: 3 } }`),
      'pools:',
      ...pools.map(
        ([t, p, running]) =>
          `  - { tenant: ${t}, id: ${p}, memoryMiB: 128, desired: { running: ${running} } }`,
      ),
    ].join('\n'),
  );
}

/** Each action as "<action> <target> <outcome>", an instance's own id shown as "*". */
const done = (report: {
  phases: Array<{ actions: Array<{ action: string; target: string; outcome: string }> }>;
}) =>
  report.phases.flatMap((p) =>
    p.actions.map((a) => {
      const parts = a.target.split('/');
      return `${a.action} ${parts.length === 3 ? `${parts[0]}/${parts[1]}/*` : a.target} ${a.outcome}`;
    }),
  );

/** Records and processes agree: no intent left, a VMM exactly for Running and Warm instances. */
function assertConverged(fleet: Fleet, want: Record<string, number>): void {
  const running: Record<string, number> = {};
  for (const instance of fleet.store.listInstances()) {
    assert.equal(instance.intent, undefined, `${instance.path} still has an intent`);
    const holds = instance.state === 'Running' || instance.state === 'Warm';
    assert.equal(
      vmProcesses(instanceDir(fleetDir, instance.seq)).length > 0,
      holds,
      `${instance.path} is ${instance.state}`,
    );
    if (instance.state === 'Running')
      running[`${instance.tenant}/${instance.pool}`] =
        (running[`${instance.tenant}/${instance.pool}`] ?? 0) + 1;
  }
  assert.deepEqual(running, want);
}

describe('the fleet agent on tiny guests', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 900_000,
}, () => {
  let server: AgentServer;
  let client: AgentClient;
  let fleet: Fleet;

  before(async () => {
    await initCerts(certs, { ca: true });
    writeDoc([
      ['acme', 'web', 1],
      ['globex', 'jobs', 1],
    ]);
    server = await startAgent({
      fleetDir,
      certsDir: certs,
      desiredFile: desired,
      port: 0,
      requestTimeoutMs: 300_000,
      maxExecOutputBytes: 1024 * 1024,
    });
    client = await connectAgent({
      url: server.url,
      ca: `${certs}/ca.pem`,
      cert: `${certs}/client.pem`,
      key: `${certs}/client.key`,
      timeoutMs: 300_000,
    });
    fleet = new Fleet({ dir: fleetDir });
  });

  after(async () => {
    client?.close();
    await server?.close();
    for (const tenant of fleet.store.listTenants()) await fleet.destroyTenant(tenant.id).catch(() => {});
    await fleet?.close();
    for (const leftover of processesNaming(dir)) await stopDetached(leftover, 0);
    rmSync(dir, { recursive: true, force: true });
  });

  it('reconciles from empty to two tenants over the API; a second run changes nothing', async () => {
    const first = await client.reconcile();
    assert.deepEqual(done(first), [
      'create acme done',
      'create globex done',
      'create acme/web done',
      'create globex/jobs done',
      'create acme/web/* done',
      'create globex/jobs/* done',
    ]);
    assertConverged(fleet, { 'acme/web': 1, 'globex/jobs': 1 });
    const second = await client.reconcile();
    assert.equal(second.changed, 0, JSON.stringify(second.phases));
    assert.deepEqual(
      (await client.instances({ tenant: 'acme' })).map((i) => i.state),
      ['Running'],
    );
    assert.deepEqual((await client.nodeStats()).instances, { Running: 2 });
  });

  it('exec, sleep and wake through the API; the audit tail shows them', async () => {
    const [web] = await client.instances({ tenant: 'acme', pool: 'web' });
    assert.ok(web);
    const wrote = await client.exec(web.path, [
      'sh',
      '-c',
      'echo kept > /root/mark; echo hi; echo err >&2; exit 3',
    ]);
    assert.deepEqual([wrote.status, wrote.stdout, wrote.stderr], [3, 'hi\n', 'err\n']);
    assert.equal((await client.sleep(web.path)).state, 'Sleeping');
    assert.equal((await client.wake(web.path)).state, 'Running');
    assert.equal((await client.exec(web.path, ['cat', '/root/mark'])).stdout, 'kept\n');
    const events = await client.audit('acme', { tail: 8 });
    assert.deepEqual(
      events.map((e) => `${e.action} ${e.outcome}`),
      ['api.exec', 'exec', 'api.sleep', 'sleep', 'api.wake', 'wake', 'api.exec', 'exec'].map(
        (a) => `${a} ok`,
      ),
    );
    for (const event of events.filter((e) => e.action.startsWith('api.')))
      assert.equal(event.actor, 'operator (client certificate, via the agent)');
    assert.equal((await client.reconcile()).changed, 0, 'a woken instance already matches');
    // More output than the agent takes (1 MiB here): the command is killed, 413, the guest lives.
    await assert.rejects(
      client.exec(web.path, ['sh', '-c', 'head -c 50000000 /dev/zero; echo not-reached > /root/over']),
      (error: Error) =>
        error instanceof AgentCallError &&
        error.statusCode === 413 &&
        /more than 1048576 bytes/.test(error.message),
    );
    assert.equal((await client.exec(web.path, ['sh', '-c', 'echo alive; ls /root'])).stdout, 'alive\nmark\n');
  });

  it('scale down stops the excess; scale up starts the Stopped one before creating any', async () => {
    writeDoc([
      ['acme', 'web', 0],
      ['globex', 'jobs', 1],
    ]);
    assert.deepEqual(done(await client.reconcile()), ['update acme/web done', 'stop acme/web/* done']);
    assertConverged(fleet, { 'globex/jobs': 1 });
    writeDoc([
      ['acme', 'web', 1],
      ['globex', 'jobs', 1],
    ]);
    assert.deepEqual(done(await client.reconcile()), ['update acme/web done', 'start acme/web/* done']);
    assert.equal(fleet.store.listInstances({ tenant: 'acme' }).length, 1, 'no instance was created');
    assertConverged(fleet, { 'acme/web': 1, 'globex/jobs': 1 });
  });

  it('prune destroys the tenant the document no longer lists, only when asked', async () => {
    writeDoc([['acme', 'web', 1]], ['acme']);
    assert.deepEqual(done(await client.reconcile()), []);
    assert.equal(fleet.store.listInstances({ tenant: 'globex' }).length, 1);
    assert.deepEqual(done(await client.reconcile({ prune: true })), ['destroy globex done']);
    assert.deepEqual(
      fleet.store.listTenants().map((t) => t.id),
      ['acme'],
    );
    assertConverged(fleet, { 'acme/web': 1 });
  });

  it('a CLI reconcile, then the agent, killed with -9 at random phases: the next run finishes the job', async () => {
    writeDoc(
      [
        ['acme', 'web', 2],
        ['initech', 'api', 1],
      ],
      ['acme', 'initech'],
    );
    // Each marker is a progress line with at least an instance start still to come (0.7 s here,
    // and mostly a RAM copy, so not much less under KVM). The delay stays well below that: with a
    // base copied from the boot cache, a whole reconcile takes under 2 s.
    const markers = [
      'tenants: create',
      'pools: create',
      'scale: create acme/web',
      'start of acme/web/',
      'scale: create initech/api',
      'making the base of pool initech/api',
    ];
    const marker = markers[Math.floor(Math.random() * markers.length)] as string;
    const delay = Math.floor(Math.random() * 200);
    process.stderr.write(`# killing the reconcile ${delay} ms after "${marker}"\n`);
    const killed = await runProgram(
      process.execPath,
      [cli, 'fleet', '--fleet-dir', fleetDir, 'reconcile', desired],
      {
        timeoutMs: 300_000,
        during: async (stderr, pid) => {
          while (!stderr().includes(marker)) await new Promise((resolve) => setTimeout(resolve, 20));
          await new Promise((resolve) => setTimeout(resolve, delay));
          process.kill(pid, 'SIGKILL');
        },
      },
    );
    assert.equal(killed.code, null, `the reconcile finished before it was killed:\n${killed.stderr}`);
    // The agent picks the job up at start (its first periodic reconcile) and is killed in turn.
    const agentDelay = Math.floor(Math.random() * 4000);
    process.stderr.write(`# killing the agent ${agentDelay} ms into its reconcile\n`);
    const agentRun = await runProgram(
      process.execPath,
      [
        cli,
        'fleet',
        '--fleet-dir',
        fleetDir,
        'agent',
        'serve',
        '--desired',
        desired,
        '--certs',
        certs,
      ].concat(['--listen', '127.0.0.1:0', '--interval', '3600']),
      {
        timeoutMs: 300_000,
        during: async (stderr, pid) => {
          while (!/listening on/.test(stderr())) await new Promise((resolve) => setTimeout(resolve, 20));
          await new Promise((resolve) => setTimeout(resolve, agentDelay));
          process.kill(pid, 'SIGKILL');
        },
      },
    );
    assert.equal(agentRun.code, null, agentRun.stderr);
    const rerun = await runCli(
      ['fleet', '--fleet-dir', fleetDir, 'reconcile', desired, '--json'],
      {},
      300_000,
    );
    assert.equal(rerun.code, 0, rerun.stderr);
    assertConverged(fleet, { 'acme/web': 2, 'initech/api': 1 });
    const third = await runCli(['fleet', '--fleet-dir', fleetDir, 'reconcile', desired]);
    assert.match(third.stdout, /nothing changed/, third.stdout + third.stderr);
  });

  it('`agent serve --interval 2` converges a changed document on its own, with no request', async () => {
    /** The agent's periodic reconcile lines so far. */
    const periodic = (stderr: string) => stderr.split('\n').filter((l) => l.includes('periodic reconcile'));
    /** Waits (up to 120 s) for the agent's periodic reconcile number `n` (from 1) and returns its line. */
    const nth = async (stderr: () => string, n: number) => {
      const until = Date.now() + 120_000;
      while (periodic(stderr()).length < n) {
        assert.ok(Date.now() < until, `no periodic reconcile #${n}:\n${stderr()}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return periodic(stderr())[n - 1] as string;
    };
    /** The number of the first periodic reconcile from `n` on that changed something, without failures. */
    const converging = async (stderr: () => string, n: number) => {
      for (; ; n++) {
        const line = await nth(stderr, n);
        // Began before the document was written, or read it half-written (it is not written atomically).
        if (/ 0 change|reconcile failed/.test(line)) continue;
        assert.match(line, /periodic reconcile: \d+ change\(s\), 0 failure\(s\)/);
        return n;
      }
    };
    writeDoc(
      [
        ['acme', 'web', 2],
        ['initech', 'api', 1],
      ],
      ['acme', 'initech'],
    );
    const args = ['fleet', '--fleet-dir', fleetDir, 'agent', 'serve', '--desired', desired, '--certs', certs];
    const served = await runProgram(
      process.execPath,
      [cli, ...args, '--listen', '127.0.0.1:0', '--interval', '2'],
      {
        timeoutMs: 300_000,
        during: async (stderr, pid) => {
          try {
            // Its first reconcile runs at start and converges whatever the tests before left.
            assert.match(await nth(stderr, 1), /periodic reconcile: \d+ change\(s\), 0 failure\(s\)/);
            assertConverged(fleet, { 'acme/web': 2, 'initech/api': 1 });
            writeDoc(
              [
                ['acme', 'web', 1],
                ['initech', 'api', 1],
              ],
              ['acme', 'initech'],
            );
            // Any reconcile after the change converges it (one may have begun before the write).
            let n = await converging(stderr, 2);
            assertConverged(fleet, { 'acme/web': 1, 'initech/api': 1 });
            writeDoc(
              [
                ['acme', 'web', 2],
                ['initech', 'api', 1],
              ],
              ['acme', 'initech'],
            );
            n = await converging(stderr, n + 1);
            assert.equal(
              fleet.store.listInstances({ tenant: 'acme' }).length,
              2,
              'the Stopped one was started, none created',
            );
            assertConverged(fleet, { 'acme/web': 2, 'initech/api': 1 });
          } finally {
            process.kill(pid, 'SIGTERM');
          }
        },
      },
    );
    assert.equal(served.code, 0, served.stderr);
  });

  it('a shutdown of the agent leaves the instances running', async () => {
    const pids = fleet.store.listInstances().map((i) => i.pid);
    await server.close();
    assertConverged(fleet, { 'acme/web': 2, 'initech/api': 1 });
    assert.deepEqual(
      fleet.store.listInstances().map((i) => i.pid),
      pids,
    );
  });
});

// Every fleet command and every `fleet agent call` operation through the built CLI, as an
// operator types them: each one's happy path (its --json output parsed), then each one's bad
// input (exit 2 and one line, no stack trace). One tenant, one pool and one tiny instance carry
// the happy paths through their whole lifecycle.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { processesNaming } from '../../src/runtime/detached.js';
import { cli, lacks, runCli, runProgram } from '../helpers.js';

const dir = mkdtempSync('/tmp/vmkit-clitab-');
const fleet = (...args: string[]) => ['fleet', '--fleet-dir', dir, ...args];
const desired = join(dir, 'fleet.json');
const desiredPruned = join(dir, 'pruned.json');

type Result = { code: number | null; stdout: string; stderr: string };

/** Runs one command line; `expect` 0 means success, 2 means refused bad input (one line). */
async function run(args: string[], expect: 0 | 1 | 2, input?: string): Promise<Result> {
  const result =
    input === undefined
      ? await runCli(args, {}, 300_000)
      : await runProgram(process.execPath, [cli, ...args], { input, timeoutMs: 300_000 });
  const shown = `vmkit ${args.join(' ')}\nexit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
  assert.equal(result.code, expect, shown);
  if (expect !== 0) {
    assert.doesNotMatch(result.stderr, /\n\s+at /, `a stack trace:\n${shown}`);
    // One line; commander adds a second that points to --help.
    const lines = result.stderr.trim().split('\n');
    assert.ok(
      lines.length === 1 || (lines.length === 2 && /--help/.test(lines[1] ?? '')),
      `not one line:\n${shown}`,
    );
  }
  return result;
}

const json = async (args: string[]) => JSON.parse((await run([...args, '--json'], 0)).stdout) as unknown;

describe('the fleet CLI, command by command', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 1_500_000,
}, () => {
  let instance = '';

  before(() => {
    const document = (pruned: boolean) => ({
      version: 1,
      tenants: [
        { id: 'acme', subnet: '10.20.0.0/24', quotas: { maxMemoryMiB: 2048 } },
        ...(pruned ? [] : [{ id: 'doc', subnet: '10.21.0.0/24' }]),
      ],
      pools: pruned ? [] : [{ tenant: 'doc', id: 'api', memoryMiB: 128 }],
    });
    writeFileSync(desired, JSON.stringify(document(false)));
    writeFileSync(desiredPruned, JSON.stringify(document(true)));
  });

  after(async () => {
    await runCli(fleet('tenant', 'destroy', 'acme', '--yes'), {}, 120_000).catch(() => {});
    await runCli(fleet('tenant', 'destroy', 'doc', '--yes'), {}, 120_000).catch(() => {});
    assert.deepEqual(processesNaming(dir), [], 'a process of this fleet is left');
    rmSync(dir, { recursive: true, force: true });
  });

  it('tenants: create, list, info', async () => {
    await run(fleet('tenant', 'create', 'acme', '--subnet', '10.20.0.0/24', '--secret', 'TOKEN=s3cret'), 0);
    const tenants = (await json(fleet('tenant', 'list'))) as { id: string; secrets: string[] }[];
    assert.deepEqual(
      tenants.map((t) => [t.id, t.secrets]),
      [['acme', ['TOKEN']]],
    );
    const info = (await json(fleet('tenant', 'info', 'acme'))) as { id: string; subnet: string };
    assert.equal(info.subnet, '10.20.0.0/24');
  });

  it('pools: create, list, info, scale', async () => {
    await run(fleet('pool', 'create', 'acme/web', '--memory-mib', '256'), 0);
    const pools = (await json(fleet('pool', 'list', 'acme'))) as { id: string; memoryMiB: number }[];
    assert.deepEqual(
      pools.map((p) => [p.id, p.memoryMiB]),
      [['web', 256]],
    );
    assert.equal(((await json(fleet('pool', 'info', 'acme/web'))) as { image: string }).image, 'tiny');
    const scaled = (await json(fleet('pool', 'scale', 'acme/web', '--running', '1'))) as unknown;
    assert.ok(scaled !== null && typeof scaled === 'object', JSON.stringify(scaled));
    const list = (await json(fleet('instance', 'list', 'acme/web'))) as { path: string; state: string }[];
    assert.deepEqual(
      list.map((i) => i.state),
      ['Running'],
    );
    await run(fleet('pool', 'scale', 'acme/web', '--running', '0'), 0);
  });

  it('instances: create, start, info, exec, shell, logs, set, warm, resume, sleep, wake, stop', async () => {
    const created = (await json(fleet('instance', 'create', 'acme/web'))) as { path: string };
    instance = created.path;
    await run(fleet('instance', 'start', instance), 0);
    const info = (await json(fleet('instance', 'info', instance))) as { state: string; path: string };
    assert.deepEqual([info.path, info.state], [instance, 'Running']);
    const exec = await run(fleet('instance', 'exec', instance, '--', 'sh', '-c', 'echo out; exit 0'), 0);
    assert.equal(exec.stdout, 'out\n');
    const failing = await runCli(fleet('instance', 'exec', instance, '--', 'sh', '-c', 'exit 7'));
    assert.equal(failing.code, 7, failing.stderr);
    const shell = await run(
      fleet('instance', 'shell', instance),
      0,
      'echo one\necho two > /tmp/f\ncat /tmp/f\n',
    );
    assert.match(shell.stdout, /one\n[\s\S]*two\n/);
    await run(fleet('instance', 'exec', instance, '--', 'sh', '-c', 'echo cli-table-mark > /dev/console'), 0);
    assert.match((await run(fleet('instance', 'logs', instance), 0)).stdout, /cli-table-mark/);
    await run(fleet('instance', 'set', instance, '--pinned', 'on'), 0);
    assert.equal(((await json(fleet('instance', 'info', instance))) as { pinned: boolean }).pinned, true);
    for (const [verb, state] of [
      ['warm', 'Warm'],
      ['resume', 'Running'],
      ['sleep', 'Sleeping'],
      ['wake', 'Running'],
    ] as const) {
      await run(fleet('instance', verb, instance), 0);
      const now = (await json(fleet('instance', 'info', instance))) as { state: string };
      assert.equal(now.state, state, `after ${verb}`);
    }
    assert.equal((await run(fleet('instance', 'exec', instance, '--', 'cat', '/tmp/f'), 0)).stdout, 'two\n');
    await run(fleet('instance', 'stop', instance), 0);
    assert.equal(((await json(fleet('instance', 'info', instance))) as { state: string }).state, 'Stopped');
  });

  it('node, policy, audit', async () => {
    const node = (await json(fleet('node', 'info'))) as { cpus: number; accelerator: string };
    assert.ok(node.cpus >= 1 && typeof node.accelerator === 'string');
    assert.ok(typeof (await json(fleet('node', 'stats'))) === 'object');
    await run(fleet('instance', 'start', instance), 0);
    await run(fleet('instance', 'set', instance, '--pinned', 'off'), 0);
    // Defaults for every threshold but idleness: an instance idle for a second is put to sleep.
    const decisions = (await json(
      fleet('policy', 'run', '--idle-seconds', '1', '--sample-ms', '500', '--dry-run'),
    )) as unknown;
    assert.match(JSON.stringify(decisions), new RegExp(instance.replaceAll('/', '\\/')));
    const audit = await run(fleet('audit', 'acme'), 0);
    assert.match(audit.stdout, /start/);
    const tail = await run(fleet('audit', 'acme', '--tail', '2'), 0);
    assert.equal(tail.stdout.trim().split('\n').length, 2);
  });

  it('the agent: certs, serve, and every call', async () => {
    const certs = join(dir, 'certs');
    await run(
      fleet('agent', 'certs', 'init', '--ca', '--certs', certs, '--host', 'localhost', '127.0.0.1'),
      0,
    );
    assert.match((await run(fleet('agent', 'certs', 'status', '--certs', certs), 0)).stdout, /server/);
    let url = '';
    const calls: [string, string[], 0 | 2][] = [];
    const serve = runProgram(
      process.execPath,
      [
        cli,
        ...fleet(
          'agent',
          'serve',
          '--certs',
          certs,
          '--desired',
          desired,
          '--listen',
          '127.0.0.1:0',
          '--interval',
          '0',
        ),
      ],
      {
        timeoutMs: 600_000,
        during: async (stderr, pid) => {
          const started = Date.now();
          while (!/listening on (\S+)/.test(stderr()) && Date.now() - started < 120_000)
            await new Promise((resolve) => setTimeout(resolve, 50));
          url = /listening on (\S+)/.exec(stderr())?.[1] ?? '';
          try {
            const call = (op: string, ...args: string[]) =>
              fleet('agent', 'call', '--url', url, '--certs', certs, op, ...args);
            for (const op of ['node-info', 'node-stats', 'tenants', 'reconcile'])
              calls.push([op, call(op), 0]);
            calls.push(['instances', call('instances', 'acme'), 0]);
            calls.push(['sleep', call('sleep', instance), 0]);
            calls.push(['wake', call('wake', instance), 0]);
            calls.push(['exec', call('exec', instance, '--', 'echo', 'via-agent'), 0]);
            calls.push(['audit', call('audit', 'acme', '--tail', '1'), 0]);
            calls.push(['unknown op', call('nosuchop'), 2]);
            calls.push(['wake unknown', call('wake', 'acme/web/nosuch'), 2]);
            calls.push(['audit unknown', call('audit', 'nosuch'), 2]);
            calls.push(['http url', fleet('agent', 'call', 'tenants', '--url', 'http://127.0.0.1:1'), 2]);
            calls.push([
              'no certs',
              fleet('agent', 'call', '--url', url, '--certs', join(dir, 'none'), 'tenants'),
              2,
            ]);
            for (const [, args, code] of calls) {
              const result = await run(args, code);
              if (args.includes('exec')) assert.equal(result.stdout, 'via-agent\n');
            }
          } finally {
            process.kill(pid, 'SIGTERM');
          }
        },
      },
    );
    const served = await serve;
    assert.equal(served.code, 0, `agent serve after SIGTERM:\n${served.stderr}`);
    assert.equal(calls.length, 14);
    await run(fleet('agent', 'certs', 'rotate', '--certs', certs), 0);
  });

  it('instances, pools and tenants are destroyed', async () => {
    await run(fleet('instance', 'destroy', instance), 0);
    await run(fleet('pool', 'rebuild', 'acme/web'), 0);
    await run(fleet('pool', 'destroy', 'acme/web', '--yes'), 0);
    await run(fleet('tenant', 'destroy', 'acme', '--yes'), 0);
    const left = (await json(fleet('tenant', 'list'))) as { id: string }[];
    assert.deepEqual(
      left.map((t) => t.id),
      ['doc'],
      'acme is gone; doc came from the agent reconcile',
    );
  });

  it('plan, reconcile, reconcile --prune', async () => {
    assert.ok(typeof (await json(fleet('plan', desired))) === 'object');
    await run(fleet('reconcile', desired), 0);
    assert.deepEqual(((await json(fleet('tenant', 'list'))) as { id: string }[]).map((t) => t.id).sort(), [
      'acme',
      'doc',
    ]);
    await run(fleet('reconcile', desiredPruned, '--prune'), 0);
    assert.deepEqual(
      ((await json(fleet('tenant', 'list'))) as { id: string }[]).map((t) => t.id),
      ['acme'],
    );
  });

  it('bad input is refused: exit 2, one line', async () => {
    await run(fleet('tenant', 'create', 'bad'), 2); // no --subnet
    await run(fleet('tenant', 'create', 'bad name', '--subnet', '10.30.0.0/24'), 2);
    await run(fleet('tenant', 'create', 'bad', '--subnet', '10.30.0.0/33'), 2);
    await run(fleet('tenant', 'create', 'bad', '--subnet', '10.30.0.0/24', '--secret', 'FOO'), 2);
    await run(fleet('tenant', 'create', 'bad', '--subnet', '10.30.0.0/24', '--max-memory-mib', '-5'), 2);
    await run(fleet('tenant', 'create', 'meta', '--subnet', '169.254.169.0/24'), 2);
    await run(fleet('tenant', 'create', 'slirp', '--subnet', '10.0.2.0/24'), 2);
    await run(fleet('tenant', 'create', 'loop', '--subnet', '127.0.0.0/24'), 2);
    await run(fleet('tenant', 'create', 'mcast', '--subnet', '224.0.0.0/24'), 2);
    await run(fleet('tenant', 'info', 'nosuch'), 2);
    await run(fleet('tenant', 'destroy', 'nosuch'), 2);
    await run(fleet('pool', 'create', 'nosuch/p'), 2);
    await run(fleet('pool', 'create', 'justone'), 2);
    await run(fleet('tenant', 'create', 'small', '--subnet', '10.31.0.0/24', '--max-memory-mib', '128'), 0);
    await run(fleet('pool', 'create', 'small/big', '--memory-mib', '256', '--running', '1'), 2);
    await run(fleet('pool', 'create', 'small/p', '--vcpus', 'many'), 2);
    await run(fleet('pool', 'create', 'small/p', '--image', 'nosuch-image'), 2);
    await run(fleet('pool', 'create', 'small/strict', '--require-limits'), 0);
    assert.equal(
      ((await json(fleet('pool', 'info', 'small/strict'))) as { requireLimits: boolean }).requireLimits,
      true,
    );
    assert.match((await run(fleet('pool', 'info', 'small/strict'), 0)).stdout, /^limits: required/m);
    await run(fleet('pool', 'info', 'small/nosuch'), 2);
    await run(fleet('pool', 'scale', 'small/nosuch', '--running', '1'), 2);
    await run(fleet('pool', 'scale', 'small/big', '--running', '-1'), 2);
    await run(fleet('instance', 'info', 'a/b/c'), 2);
    await run(fleet('instance', 'start', 'a/b'), 2);
    await run(fleet('instance', 'exec', 'a/b/c'), 2);
    await run(fleet('instance', 'set', 'a/b/c', '--pinned', 'maybe'), 2);
    await run(fleet('instance', 'logs', 'a/b/c'), 2);
    await run(fleet('audit', 'nosuch'), 2);
    await run(fleet('audit', 'small', '--tail', 'x'), 2);
    await run(fleet('policy', 'run', '--idle-seconds', 'abc'), 2);
    await run(fleet('policy', 'run', '--sample-ms', '-1'), 2);
    await run(fleet('plan', join(dir, 'absent.json')), 2);
    await run(fleet('plan', '/dev/zero'), 2);
    await run(fleet('reconcile', '/etc'), 2);
    await run(['fleet', '--fleet-dir', '/etc/passwd', 'tenant', 'list'], 2);
    await run(['fleet', '--fleet-dir', '/proc/x', 'tenant', 'list'], 2);
    await run(fleet('agent', 'certs', 'init', '--certs', join(dir, 'c2'), '--host', 'a\nb'), 2);
    await run(fleet('agent', 'certs', 'init', '--certs', join(dir, 'c3'), '--host', 'a b;rm -rf /'), 2);
    await run(fleet('agent', 'certs', 'init', '--ca', '--certs', join(dir, 'c4'), '--days', '0'), 2);
    await run(fleet('agent', 'serve', '--listen', 'nowhere'), 2);
    await run(fleet('agent', 'serve', '--interval', '-3'), 2);
    await run(fleet('tenant', 'destroy', 'small', '--yes'), 0);
  });
});

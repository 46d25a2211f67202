// The fleet's command line on bad input: one line, exit 2, no stack trace, no hang, nothing left
// half-made. Runs the CLI from source (no guest boots: nothing here starts an instance).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runProgram } from '../helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'vmkit-fleet-cli-'));
const fleetDir = join(dir, 'fleet');
const vmkit = (args: string[], timeoutMs = 60_000) =>
  runProgram(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { timeoutMs });
const fleet = (...args: string[]) => vmkit(['fleet', '--fleet-dir', fleetDir, ...args]);

/** Exit 2 with exactly one line on stderr matching `pattern`, and no stack trace. */
async function refused(run: Promise<{ code: number | null; stderr: string }>, pattern: RegExp) {
  const { code, stderr } = await run;
  assert.equal(code, 2, stderr);
  assert.equal(stderr.trim().split('\n').length, 1, stderr);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
  assert.match(stderr.trim(), pattern);
}

describe('vmkit fleet: bad input is one line and exit 2', { timeout: 600_000 }, () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('a fleet folder that is a file, under /sys, or under /proc (which used to spin at 100% CPU)', async () => {
    for (const [where, pattern] of [
      ['/etc/passwd', /^vmkit: fleet folder \/etc\/passwd: not a folder$/],
      ['/sys/vmkit-x', /^vmkit: fleet folder \/sys\/vmkit-x: cannot open it: /],
      ['/proc/vmkit-x', /^vmkit: fleet folder \/proc\/vmkit-x: cannot open it: /],
    ] as const) {
      await refused(vmkit(['fleet', '--fleet-dir', where, 'tenant', 'list'], 30_000), pattern);
    }
  });

  test('a document that is not a regular file, or too large, is refused at once (plan /dev/zero never ended)', async () => {
    const fifo = join(dir, 'fifo.json');
    execFileSync('mkfifo', [fifo]);
    const big = join(dir, 'big.json');
    writeFileSync(big, Buffer.alloc(5 * 1024 * 1024, 0x20));
    await refused(fleet('plan', '/dev/zero'), /^vmkit: desired state \/dev\/zero: not a regular file$/);
    await refused(fleet('plan', fifo), /fifo\.json: not a regular file$/);
    await refused(fleet('plan', big), /big\.json: 5242880 bytes, more than the 4194304 allowed$/);
  });

  test('tenants: --secret without =, a subnet on the metadata network, audit of an unknown tenant', async () => {
    await refused(
      fleet('tenant', 'create', 'acme', '--subnet', '10.30.0.0/24', '--secret', 'FOO'),
      /^vmkit: --secret "FOO": expected NAME=VALUE$/,
    );
    await refused(
      fleet('tenant', 'create', 'acme', '--subnet', '169.254.169.0/24'),
      /subnet 169\.254\.169\.0\/24 is not private unicast space/,
    );
    await refused(fleet('audit', 'nobody'), /^vmkit: no tenant nobody in the fleet/);
    const created = await fleet(
      'tenant',
      'create',
      'acme',
      '--subnet',
      '10.30.0.0/24',
      '--max-memory-mib',
      '256',
    );
    assert.equal(created.code, 0, created.stderr);
    assert.equal((await fleet('audit', 'acme')).code, 0);
    await refused(
      fleet('pool', 'create', 'acme/big', '--image', 'tiny', '--memory-mib', '512'),
      /^vmkit: pool acme\/big: memoryMiB 512 is more than the tenant's maxMemoryMiB 256: no instance of it could run$/,
    );
  });

  test('listing an unknown tenant or pool is refused, not an empty list; --timeout 0 is one line', async () => {
    await refused(fleet('instance', 'list', 'nobody'), /^vmkit: no tenant nobody in the fleet/);
    await refused(fleet('instance', 'list', 'acme/nope'), /^vmkit: no pool acme\/nope in the fleet/);
    await refused(fleet('pool', 'list', 'nobody'), /^vmkit: no tenant nobody in the fleet/);
    await refused(
      fleet('instance', 'exec', 'acme/p/i', '--timeout', '0', '--', 'true'),
      /^vmkit: --timeout: must be a whole number from 1 to/,
    );
  });

  test('policy thresholds out of range', async () => {
    await refused(
      fleet('policy', 'run', '--sample-ms', '0'),
      /sleep policy: sampleMs: must be a whole number/,
    );
    const negative = await fleet('policy', 'run', '--idle-seconds', '-1');
    assert.equal(negative.code, 2, negative.stderr);
    assert.match(
      negative.stderr,
      /^error: option '--idle-seconds <n>' argument '-1' is invalid\. expected a whole number$/m,
    );
  });

  test('agent: certificates with an unsafe host or 0 days leave no folder; a client URL that is not https', async () => {
    const certs = join(dir, 'certs');
    await refused(
      fleet('agent', 'certs', 'init', '--ca', '--certs', certs, '--host', 'a b;rm -rf /'),
      /hosts\[0\]: must be a DNS name/,
    );
    await refused(fleet('agent', 'certs', 'init', '--ca', '--certs', certs, '--days', '0'), /days/);
    assert.ok(!existsSync(certs), 'no half-made certificates folder');
    await refused(
      fleet('agent', 'call', 'node-stats', '--url', 'http://127.0.0.1:1', '--certs', certs),
      /^vmkit: agent url http:\/\/127\.0\.0\.1:1: must be https:\/\/$/,
    );
  });
});

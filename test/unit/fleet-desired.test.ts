// The desired-state document and reconcile against a real Fleet with its real SQLite state and
// real image store; pools want no running instances here, so no guest boots (test/vm/fleet-agent
// drives real guests).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { reconcile } from '../../src/fleet/desired/reconcile.js';
import { loadDesired, parseDesired } from '../../src/fleet/desired/schema.js';
import { Fleet } from '../../src/fleet/fleet.js';
import { readAudit } from '../../src/fleet/state/audit.js';
import { parseSubnet } from '../../src/fleet/state/subnet.js';

const errorOf = (text: string) => {
  try {
    parseDesired(text, 'doc.json');
  } catch (error) {
    return (error as Error).message;
  }
  assert.fail(`accepted ${text}`);
};

describe('the desired-state document', () => {
  const doc = (extra: object) =>
    JSON.stringify({
      version: 1,
      tenants: [{ id: 'acme', subnet: '10.61.0.0/24' }],
      pools: [{ tenant: 'acme', id: 'web' }],
      ...extra,
    });

  test('errors name the field path, one line each', () => {
    const cases: Array<[string, RegExp]> = [
      ['{"version": 2}', /^doc\.json: version: must be 1 \(got 2\)$/],
      [doc({ extra: 1 }), /^doc\.json: unknown option "extra"$/],
      [
        doc({ pools: [{ tenant: 'acme', id: 'web', desired: { running: -1 } }] }),
        /^doc\.json: pools\[0\]\.desired\.running: must be a whole number from 0 to 1000 \(got -1\)$/,
      ],
      [
        doc({ pools: [{ tenant: 'nobody', id: 'web' }] }),
        /^doc\.json: pools\[0\]\.tenant: tenant nobody is not in the document/,
      ],
      [
        doc({ pools: [{ tenant: 'acme', id: 'web', colour: 'red' }] }),
        /^doc\.json: pools\[0\]: unknown option "colour"$/,
      ],
      [doc({ tenants: [{ id: 'acme', subnet: '10.61.0.0/33' }] }), /^doc\.json: tenants\[0\]\.subnet: /],
      [
        doc({ tenants: [{ id: 'Acme!', subnet: '10.61.0.0/24' }] }),
        /^doc\.json: tenants\[0\]\.id: must be 1-24 lowercase/,
      ],
      [
        doc({ tenants: [{ id: 'acme', subnet: '10.61.0.0/24', secrets: { TOKEN: 'inline' } }] }),
        /^doc\.json: tenants\[0\]\.secrets\.TOKEN: must be \{ env: "NAME" \} or \{ file: "\/path" \}/,
      ],
      ['{"version": 1,', /^doc\.json: not valid JSON: /],
      [
        doc({
          pools: [
            { tenant: 'acme', id: 'web' },
            { tenant: 'acme', id: 'web' },
          ],
        }),
        /pools\[1\]\.id: duplicate pool acme\/web/,
      ],
    ];
    for (const [text, pattern] of cases) {
      const message = errorOf(text);
      assert.match(message, pattern);
      assert.ok(!message.includes('\n'), `one line: ${message}`);
    }
  });

  test('a pool image is a name or a recipe; recipe errors name the path inside the recipe', () => {
    const pool = (image: unknown) => doc({ pools: [{ tenant: 'acme', id: 'web', image }] });
    const cases: Array<[string, RegExp]> = [
      [
        pool('ubuntu'),
        /^doc\.json: pools\[0\]\.image: must be an image name \(tiny, debian\) or a recipe object/,
      ],
      [pool(7), /^doc\.json: pools\[0\]\.image: must be an image name .* \(got 7\)$/],
      [pool({ base: 'alpine' }), /^doc\.json: pools\[0\]\.image\.base: must be "debian" \(got "alpine"\)$/],
      [pool({ base: 'debian', colour: 'red' }), /^doc\.json: pools\[0\]\.image: unknown option "colour"$/],
      [
        pool({ base: 'debian', run: ['true', 3] }),
        /^doc\.json: pools\[0\]\.image\.run\[1\]: must be a shell command \(got 3\)$/,
      ],
      [
        pool({ base: 'debian', files: { 'etc/relative': 'x' } }),
        /^doc\.json: pools\[0\]\.image\.files\["etc\/relative"\]: invalid key: must be an absolute path inside the image/,
      ],
      [
        pool({ base: 'debian', packages: ['Not A Package'] }),
        /^doc\.json: pools\[0\]\.image\.packages\[0\]: is not a Debian package name/,
      ],
    ];
    for (const [text, pattern] of cases) {
      const message = errorOf(text);
      assert.match(message, pattern);
      assert.ok(!message.includes('\n'), `one line: ${message}`);
    }
    const parsed = parseDesired(
      pool({ base: 'debian', name: 'web', files: { '/b': '2', '/a': '1' }, run: ['x'] }),
    );
    assert.deepEqual(parsed.pools[0]?.image, {
      base: 'debian',
      suite: 'bookworm',
      packages: [],
      files: { '/a': '1', '/b': '2' },
      run: ['x'],
      name: 'web',
    });
    assert.equal(parseDesired(doc({})).pools[0]?.image, 'tiny');
  });

  test("subnets: private unicast space only, not vmkit's own networks, no overlaps in one document", () => {
    for (const [subnet, problem] of [
      ['169.254.169.0/24', 'is not private unicast space'],
      ['127.0.0.0/24', 'is not private unicast space'],
      ['0.0.0.0/16', 'is not private unicast space'],
      ['224.0.0.0/24', 'is not private unicast space'],
      ['100.64.0.0/24', 'is not private unicast space'],
      ['10.0.2.0/24', "overlaps 10.0.2.0/24, the outbound NIC's network"],
      ['10.0.0.0/16', "overlaps 10.0.2.0/24, the outbound NIC's network"],
    ] as const) {
      assert.match(
        errorOf(doc({ tenants: [{ id: 'acme', subnet }] })),
        new RegExp(`tenants\\[0\\]\\.subnet: subnet ${subnet.replace(/\./g, '\\.')} ${problem}`),
      );
    }
    assert.match(
      errorOf(
        doc({
          tenants: [
            { id: 'acme', subnet: '10.61.0.0/24' },
            { id: 'globex', subnet: '10.61.0.128/25' },
          ],
        }),
      ),
      /tenants\[1\]\.subnet: 10\.61\.0\.128\/25 overlaps tenant acme's 10\.61\.0\.0\/24/,
    );
    // Subnets already stored keep working: only new tenants' subnets are held to this.
    assert.equal(parseSubnet('100.64.0.0/24').gateway, '100.64.0.1');
    for (const subnet of ['10.61.0.0/24', '172.16.5.0/24', '192.168.200.0/24'])
      assert.doesNotThrow(() => parseDesired(doc({ tenants: [{ id: 'acme', subnet }] }), 'doc.json'));
  });

  test('YAML reads the same as JSON', () => {
    const yaml =
      'version: 1\ntenants:\n  - id: acme\n    subnet: 10.61.0.0/24\npools:\n  - { tenant: acme, id: web, desired: { running: 2 } }\n';
    const parsed = parseDesired(yaml, 'doc.yaml', 'yaml');
    assert.deepEqual(parsed.pools[0]?.desired, { running: 2, warm: 0, sleeping: 0 });
    assert.match(errorOf('version: 1\nversion: 1\n'), /neither JSON nor YAML|duplicate|unique/i);
  });
});

describe('reconcile against a real fleet (no guests)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-desired-'));
  const file = join(dir, 'fleet.yaml');
  const fleet = new Fleet({ dir: join(dir, 'fleet') });
  after(async () => {
    await fleet.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const write = (text: string) => {
    writeFileSync(file, text);
    return loadDesired(file);
  };
  const twoTenants = `version: 1
tenants:
  - id: acme
    subnet: 10.62.0.0/24
    quotas: { maxRunning: 3 }
    secrets: { TOKEN: { env: VMKIT_TEST_TOKEN } }
  - id: globex
    subnet: 10.63.0.0/24
pools:
  - { tenant: acme, id: web, memoryMiB: 96 }
  - { tenant: globex, id: jobs }
`;
  const actions = (report: Awaited<ReturnType<typeof reconcile>>) =>
    report.phases.flatMap((p) => p.actions.map((a) => `${a.phase}:${a.action}:${a.target}:${a.outcome}`));

  test('plan changes nothing; reconcile creates; a second run changes nothing', async () => {
    process.env.VMKIT_TEST_TOKEN = 's3cret';
    const doc = write(twoTenants);
    const plan = await reconcile(fleet, doc, { dryRun: true });
    assert.deepEqual(actions(plan), [
      'tenants:create:acme:planned',
      'tenants:create:globex:planned',
      'pools:create:acme/web:planned',
      'pools:create:globex/jobs:planned',
    ]);
    assert.equal(fleet.store.listTenants().length, 0, 'a plan creates nothing');
    const first = await reconcile(fleet, doc);
    assert.deepEqual(
      actions(first),
      actions(plan).map((a) => a.replace('planned', 'done')),
    );
    assert.equal(first.failed, 0);
    assert.equal(fleet.store.tenant('acme').quotas.maxRunning, 3);
    assert.deepEqual(fleet.store.tenant('acme').secrets, { TOKEN: 's3cret' });
    assert.equal(fleet.store.pool('acme', 'web').memoryMiB, 96);
    const second = await reconcile(fleet, doc);
    assert.deepEqual(actions(second), []);
    assert.equal(second.changed, 0);
  });

  test('changed quotas, secrets and pool settings are updated in place, and audited', async () => {
    process.env.VMKIT_TEST_TOKEN = 'rotated';
    const doc = write(
      twoTenants.replace('maxRunning: 3', 'maxRunning: 4').replace('memoryMiB: 96', 'memoryMiB: 160'),
    );
    const report = await reconcile(fleet, doc);
    assert.deepEqual(actions(report), ['tenants:update:acme:done', 'pools:update:acme/web:done']);
    assert.equal(fleet.store.tenant('acme').quotas.maxRunning, 4);
    assert.deepEqual(fleet.store.tenant('acme').secrets, { TOKEN: 'rotated' });
    assert.equal(fleet.store.pool('acme', 'web').memoryMiB, 160);
    const detail = readAudit(fleet.dir, 'acme').map((e) => `${e.action} ${e.detail}`);
    assert.ok(
      detail.some((d) => d.startsWith('tenant.update maxRunning, secrets (TOKEN)')),
      detail.join('\n'),
    );
    assert.ok(!detail.join('\n').includes('rotated'), 'secret values stay out of the audit log');
    assert.equal((await reconcile(fleet, doc)).changed, 0);
  });

  test('an image build that differs from the recorded revision is a new revision (pool rebuild: history, base invalidated)', async () => {
    const doc = write(twoTenants);
    await reconcile(fleet, doc);
    const built = fleet.store.pool('globex', 'jobs').revision;
    fleet.store.db.prepare("UPDATE pools SET revision = 'old' WHERE id = 'jobs'").run();
    const report = await reconcile(fleet, doc);
    assert.deepEqual(actions(report), ['pools:rebuild:globex/jobs:done']);
    assert.equal(fleet.store.pool('globex', 'jobs').revision, built);
    assert.deepEqual(
      fleet.store.poolBuilds('globex', 'jobs').map((b) => b.revision),
      [built, built],
    );
    const rebuilt = readAudit(fleet.dir, 'globex').filter((e) => e.action === 'pool.rebuild');
    assert.match(rebuilt.at(-1)?.detail ?? '', new RegExp(`^revision old -> ${built}`));
    assert.equal((await reconcile(fleet, doc)).changed, 0);
  });

  test('a plan shows the scale steps; unlisted pools and tenants go only with prune', async () => {
    const scaled = write(`${twoTenants.replace('memoryMiB: 96', 'memoryMiB: 96, desired: { running: 2 }')}`);
    const plan = await reconcile(fleet, scaled, { dryRun: true });
    assert.deepEqual(
      actions(plan).filter((a) => a.startsWith('scale')),
      ['scale:create:acme/web:planned', 'scale:create:acme/web:planned'],
    );
    const fewer = write(
      'version: 1\ntenants:\n  - { id: acme, subnet: 10.62.0.0/24, secrets: { TOKEN: { env: VMKIT_TEST_TOKEN } }, quotas: { maxRunning: 3 } }\npools:\n  - { tenant: acme, id: web, memoryMiB: 96 }\n',
    );
    const kept = await reconcile(fleet, fewer);
    assert.deepEqual(actions(kept), []);
    assert.match(kept.phases.find((p) => p.phase === 'prune')?.skipped ?? '', /unlisted: globex\)/);
    const pruned = await reconcile(fleet, fewer, { prune: true });
    assert.deepEqual(actions(pruned), ['prune:destroy:globex:done']);
    assert.equal(fleet.store.listPools('globex').length, 0);
    assert.deepEqual(
      fleet.store.listTenants().map((t) => t.id),
      ['acme'],
    );
  });

  test('bad input changes nothing: a moved subnet, a missing secret', async () => {
    const before = JSON.stringify(fleet.store.listTenants());
    await assert.rejects(
      reconcile(fleet, write(twoTenants.replace('10.62.0.0/24', '10.64.0.0/24'))),
      /tenant acme: the document says subnet 10.64.0.0\/24, the fleet has 10.62.0.0\/24/,
    );
    delete process.env.VMKIT_TEST_TOKEN;
    await assert.rejects(
      reconcile(fleet, write(twoTenants)),
      /tenant acme secret TOKEN: environment variable VMKIT_TEST_TOKEN is not set/,
    );
    assert.equal(JSON.stringify(fleet.store.listTenants()), before);
  });

  test('the whole document is checked before anything is applied: an overlap with an unlisted tenant, a pool over its quota', async () => {
    process.env.VMKIT_TEST_TOKEN = 'x';
    const tenants = () => fleet.store.listTenants().map((t) => t.id);
    const before = tenants();
    assert.ok(before.includes('acme') && !before.includes('initech'));
    // acme (10.62.0.0/24) is in the fleet; this document does not list it.
    const overlapping = write(
      'version: 1\ntenants:\n  - { id: initech, subnet: 10.70.0.0/24 }\n  - { id: hooli, subnet: 10.62.0.0/16 }\n',
    );
    await assert.rejects(
      reconcile(fleet, overlapping),
      /tenant hooli: subnet 10.62.0.0\/16 overlaps tenant acme's 10.62.0.0\/24/,
    );
    await assert.rejects(reconcile(fleet, overlapping, { dryRun: true }), /overlaps tenant acme/);
    const tooBig = write(
      'version: 1\ntenants:\n  - { id: initech, subnet: 10.70.0.0/24, quotas: { maxMemoryMiB: 256 } }\npools:\n  - { tenant: initech, id: big, memoryMiB: 512 }\n',
    );
    await assert.rejects(
      reconcile(fleet, tooBig),
      /pool initech\/big: memoryMiB 512 is more than the tenant's maxMemoryMiB 256/,
    );
    const tooMany = write(
      'version: 1\ntenants:\n  - { id: initech, subnet: 10.70.0.0/24, quotas: { maxRunning: 2 } }\npools:\n  - { tenant: initech, id: a, desired: { running: 2 } }\n  - { tenant: initech, id: b, desired: { running: 1 } }\n',
    );
    await assert.rejects(
      reconcile(fleet, tooMany, { dryRun: true }),
      /tenant initech: its pools want 3 running instances together, more than its maxRunning 2/,
    );
    assert.deepEqual(tenants(), before, 'nothing was half-applied');
  });
});

describe('vmkit fleet plan and reconcile on the command line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-desired-cli-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const vmkit = (...args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [
        '--import',
        'tsx',
        'src/cli/main.ts',
        'fleet',
        '--fleet-dir',
        join(dir, 'f'),
        ...args,
      ]);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.stderr.on('data', (chunk) => (stderr += chunk));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });

  test('a malformed document: one line naming the field, exit 2, nothing created', async () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(
      file,
      'version: 1\ntenants:\n  - { id: a, subnet: 10.66.0.0/24 }\npools:\n  - { tenant: b, id: p }\n',
    );
    for (const command of ['plan', 'reconcile']) {
      const result = await vmkit(command, file);
      assert.equal(result.code, 2, result.stderr);
      assert.match(
        result.stderr.trim(),
        /^vmkit: .*bad\.yaml: pools\[0\]\.tenant: tenant b is not in the document/,
      );
      assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    }
    const good = join(dir, 'good.json');
    writeFileSync(good, JSON.stringify({ version: 1, tenants: [{ id: 'a', subnet: '10.66.0.0/24' }] }));
    const plan = await vmkit('--json', 'plan', good);
    assert.equal(plan.code, 0, plan.stderr);
    assert.equal(JSON.parse(plan.stdout).phases[0].actions[0].action, 'create');
    const applied = await vmkit('reconcile', good);
    assert.match(applied.stdout, /tenants: did create a/);
    assert.match((await vmkit('reconcile', good)).stdout, /nothing changed/);
  });

  test('a failed action makes the exit status 1; the actions that worked stay done', async () => {
    const file = join(dir, 'failing.json');
    writeFileSync(
      file,
      JSON.stringify({
        version: 1,
        tenants: [{ id: 'acme', subnet: '10.93.0.0/24' }],
        pools: [{ tenant: 'acme', id: 'web' }],
      }),
    );
    // The pool's image cannot be resolved: the image cache is somewhere nothing can be made.
    const result = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          'src/cli/main.ts',
          'fleet',
          '--fleet-dir',
          join(dir, 'failing'),
          'reconcile',
          file,
        ],
        { env: { ...process.env, VMKIT_CACHE_DIR: '/proc/nope/cache' } },
      );
      let stdout = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.on('close', (code) => resolve({ code, stdout }));
    });
    assert.equal(result.code, 1, result.stdout);
    assert.match(result.stdout, /tenants: did create acme/);
    assert.match(result.stdout, /pools: FAILED create acme\/web .*\/proc\/nope/);
    assert.match(result.stdout, /1 failure\(s\)/);
  });

  test('pool create --image takes a recipe file; a bad one or a bad --builder is one line, exit 2, no pool', async () => {
    const bad = join(dir, 'bad-recipe.json');
    writeFileSync(bad, JSON.stringify({ base: 'debian', run: ['true', 1] }));
    const cases: Array<[string[], RegExp]> = [
      [
        ['pool', 'create', 'a/p', '--image', bad],
        /^vmkit: recipe .*bad-recipe\.json: run\[1\]: must be a shell command \(got 1\)$/,
      ],
      [
        ['pool', 'create', 'a/p', '--image', join(dir, 'none.json')],
        /^vmkit: --image recipe file .*none\.json: cannot read it: /,
      ],
      [['--builder', 'cloud', 'pool', 'list'], /--builder: expected vm or host, got "cloud"/],
    ];
    for (const [args, pattern] of cases) {
      const result = await vmkit(...args);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr.trim(), pattern);
      assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    }
    assert.equal((await vmkit('--json', 'pool', 'list')).stdout.trim(), '[]');
  });
});

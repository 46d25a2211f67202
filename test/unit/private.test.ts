// Private folders, sockets and child processes whatever the umask (util/private.ts), and the run
// root in the shared temp folder refused when another user made it first.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { initCerts, keyPath } from '../../src/fleet/agent/certs.js';
import { Runtime } from '../../src/runtime/runtime.js';
import { ensurePrivateDir, makePrivateDir, withPrivateUmask } from '../../src/util/private.js';

const scratch = mkdtempSync(join(tmpdir(), 'vmkit-private-'));
const modeOf = (path: string) => statSync(path).mode & 0o7777;
const asRoot = process.getuid?.() === 0;
const NOBODY = 65534;

/** Runs `work` under `mask`, then puts the umask back. */
function underUmask<T>(mask: number, work: () => T): T {
  const old = process.umask(mask);
  try {
    return work();
  } finally {
    process.umask(old);
  }
}

after(() => rmSync(scratch, { recursive: true, force: true }));

describe('private folders', () => {
  it('are made 0700, missing parents too, under umask 000 and under umask 777', () => {
    for (const [mask, name] of [
      [0o000, 'open'],
      [0o777, 'closed'],
    ] as const) {
      const path = join(scratch, name, 'a', 'b');
      underUmask(mask, () => ensurePrivateDir(path));
      for (const dir of [join(scratch, name), join(scratch, name, 'a'), path]) {
        assert.equal(modeOf(dir), 0o700, `${dir} under umask ${mask.toString(8)}`);
      }
      underUmask(mask, () => makePrivateDir(join(path, 'fresh')));
      assert.equal(modeOf(join(path, 'fresh')), 0o700);
      assert.throws(() => makePrivateDir(join(path, 'fresh')), /EEXIST/);
    }
  });

  it('narrows an existing folder of ours that is too open; keepGroup keeps group read and search', () => {
    const path = join(scratch, 'wide');
    mkdirSync(path);
    chmodSync(path, 0o777);
    ensurePrivateDir(path);
    assert.equal(modeOf(path), 0o700);
    chmodSync(path, 0o777);
    ensurePrivateDir(path, { keepGroup: true });
    assert.equal(modeOf(path), 0o750);
    ensurePrivateDir(path, { keepGroup: true });
    assert.equal(modeOf(path), 0o750);
  });

  it('refuses a folder another user owns, unless that owner is expected', { skip: !asRoot }, () => {
    const path = join(scratch, 'theirs');
    mkdirSync(path);
    chmodSync(path, 0o777);
    chownSync(path, NOBODY, NOBODY);
    assert.throws(
      () => ensurePrivateDir(path),
      (error: Error) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, /belongs to uid 65534, not to this user \(uid 0\)/);
        return true;
      },
    );
    assert.equal(modeOf(path), 0o777, 'left as it was');
    ensurePrivateDir(path, { owners: [NOBODY] });
    assert.equal(modeOf(path), 0o700);
  });

  it('refuses the run root in the temp folder when another user made it first', { skip: !asRoot }, () => {
    const temp = join(scratch, 'tmp');
    mkdirSync(temp);
    const planted = join(temp, `vmkit-${process.getuid?.()}`);
    mkdirSync(planted);
    chmodSync(planted, 0o777);
    chownSync(planted, NOBODY, NOBODY);
    const saved = { TMPDIR: process.env.TMPDIR, VMKIT_RUN_DIR: process.env.VMKIT_RUN_DIR };
    process.env.TMPDIR = temp;
    delete process.env.VMKIT_RUN_DIR;
    try {
      const runtime = new Runtime();
      assert.equal(runtime.root, planted);
      assert.throws(() => runtime.runDir, /belongs to uid 65534/);
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  it('a run folder of ours left too open is narrowed before use', async () => {
    const root = join(scratch, 'runs');
    mkdirSync(join(root, 'r'), { recursive: true });
    chmodSync(join(root, 'r'), 0o777);
    const runtime = new Runtime({ root });
    try {
      const dir = underUmask(0, () => runtime.runDir);
      assert.equal(modeOf(join(root, 'r')), 0o700);
      assert.equal(modeOf(dir), 0o700);
      assert.equal(modeOf(join(dir, 'owner.json')) & 0o077, 0);
    } finally {
      await runtime.close();
    }
  });
});

describe('fleet agent certificates', () => {
  it('under umask 000: the folders 0700 (an open one narrowed), the keys 0600', async () => {
    const certs = join(scratch, 'fleet', 'agent', 'certs');
    mkdirSync(certs, { recursive: true });
    chmodSync(certs, 0o777);
    const old = process.umask(0);
    try {
      await initCerts(certs, { ca: true });
    } finally {
      process.umask(old);
    }
    assert.equal(modeOf(certs), 0o700);
    for (const role of ['ca', 'server', 'client'] as const) assert.equal(modeOf(keyPath(certs, role)), 0o600);
  });
});

describe('withPrivateUmask', () => {
  it('runs the program under umask 077 whatever ours is, with its arguments intact', () => {
    const command = withPrivateUmask('/bin/sh', [
      '-c',
      'umask; printf "%s|" "$@"',
      'name',
      'a b',
      '$HOME',
      '',
    ]);
    const result = underUmask(0, () => spawnSync(command.program, command.args, { encoding: 'utf8' }));
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, '0077\na b|$HOME||');
  });
});

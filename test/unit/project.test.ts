// Project VMs without a guest: config parsing and its errors, the sync plan, the state lock.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { splitAtDashes } from '../../src/cli/commands/project.js';
import { ConfigError } from '../../src/errors.js';
import { findConfigFile, loadProjectConfig, parseConfig, selectVm } from '../../src/project/config.js';
import { up } from '../../src/project/lifecycle.js';
import { globMatcher, hostManifest, planSync } from '../../src/project/manifest.js';
import { installKey } from '../../src/project/media.js';
import { hasAgent, type IsoImageConfig, installSteps, isIsoImage } from '../../src/project/media-config.js';
import { STARTER_JSON, STARTER_TS } from '../../src/project/starter.js';
import {
  acquireLock,
  dataDisk,
  LockedError,
  runDir,
  withLock,
  writeFileAtomic,
} from '../../src/project/state.js';
import { vmStatus } from '../../src/project/status.js';
import { projectVm } from '../../src/project/vmm.js';

const scratch = mkdtempSync(join(tmpdir(), 'vmkit-project-unit-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const problems = (value: unknown) => {
  try {
    parseConfig(value, join(scratch, 'vmkit.config.json'));
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.message.split('\n').slice(1);
  }
  assert.fail('expected a ConfigError');
};

describe('project config', () => {
  it('fills defaults: the tiny image, the project synced to /work/project, the first VM as default', () => {
    const config = parseConfig(
      { vms: { dev: { commands: { test: 'make test' } } } },
      join(scratch, 'vmkit.config.json'),
    );
    const dev = selectVm(config, undefined);
    assert.equal(dev.image, 'tiny');
    assert.equal(dev.workdir, '/work/project');
    assert.deepEqual(dev.sync, [{ host: scratch, guest: '/work/project', exclude: [], gitignore: true }]);
    assert.deepEqual(dev.commands.test, { run: 'make test' });
  });

  it('reports every problem on its own line with its field path', () => {
    const lines = problems({
      vms: { dev: { memoryMiB: 'lots', cpus: 0, ports: [{ guest: 99999 }], colour: 'red' } },
    });
    assert.equal(lines.length, 4);
    assert.ok(lines.includes('vms.dev: unknown field "colour"'));
    assert.ok(lines.some((line) => /^vms\.dev\.memoryMiB: must be MiB \(got "lots"\)$/.test(line)));
    assert.ok(lines.some((line) => /^vms\.dev\.cpus: .*\(got 0\)$/.test(line)));
    assert.ok(lines.some((line) => /^vms\.dev\.ports\.0\.guest: .*\(got 99999\)$/.test(line)));
  });

  it('refuses sync paths outside the project, unknown default commands and VMs, bad guest paths', () => {
    assert.deepEqual(problems({ vms: { dev: { sync: [{ host: '../elsewhere', guest: '/src' }] } } }), [
      `vms.dev.sync.0.host: ../elsewhere is outside the project ${scratch}`,
    ]);
    assert.deepEqual(problems({ vms: { dev: { defaultCommand: 'build' } } }), [
      'vms.dev.defaultCommand: no command named "build"',
    ]);
    assert.deepEqual(problems({ vms: { dev: {} }, default: 'prod' }), ['default: no VM named "prod"']);
    assert.match(
      problems({ vms: { dev: { workdir: 'relative' } } })[0] ?? '',
      /^vms\.dev\.workdir: must be an absolute guest path/,
    );
    assert.match(problems({ vms: {} })[0] ?? '', /^vms: must name at least one VM/);
    assert.match(problems({ vms: { 'Bad Name': {} } })[0] ?? '', /^vms\.Bad Name: .*VM names are/);
    const config = parseConfig({ vms: { dev: {} } }, join(scratch, 'vmkit.config.json'));
    assert.throws(() => selectVm(config, 'other'), /unknown VM "other" .*\(it has: dev\)/);
  });

  it("refuses a sync into the guest's root or system folders, and a port forwarded twice", () => {
    for (const guest of ['/', '/etc', '/usr/', '/proc/x', '/work', '//'])
      assert.match(
        problems({ vms: { dev: { sync: [{ guest }] } } })[0] ?? '',
        /^vms\.dev\.sync\.0\.guest: \/\S* is the guest's root, a system folder/,
        guest,
      );
    assert.doesNotThrow(() =>
      parseConfig(
        { vms: { dev: { sync: [{ guest: '/work/src' }, { host: 'x', guest: '/srv/x' }] } } },
        join(scratch, 'vmkit.config.json'),
      ),
    );
    assert.deepEqual(
      problems({
        vms: { dev: { ports: [{ guest: 80, host: 8080 }, { guest: 81, host: 8080 }, { guest: 80 }] } },
      }),
      [
        'vms.dev.ports.1.host: port 8080 is forwarded twice',
        'vms.dev.ports.2.guest: port 80 is forwarded twice',
      ],
    );
  });

  it('is found by walking up, and loads from TypeScript as well as JSON', async () => {
    const project = join(scratch, 'walk');
    mkdirSync(join(project, 'a', 'b'), { recursive: true });
    writeFileSync(
      join(project, 'vmkit.config.ts'),
      'const memoryMiB: number = 128;\nexport default { vms: { box: { memoryMiB } } };\n',
    );
    assert.equal(findConfigFile(join(project, 'a', 'b')), join(project, 'vmkit.config.ts'));
    const config = await loadProjectConfig(join(project, 'a', 'b'));
    assert.equal(config.root, project);
    assert.equal(config.vms.box?.memoryMiB, 128);
    writeFileSync(join(project, 'a', 'vmkit.config.json'), '{ "vms": ');
    await assert.rejects(loadProjectConfig(join(project, 'a', 'b')), /vmkit\.config\.json: not JSON/);
  });

  it('both starters vmkit init writes load as configs: the commented TypeScript and the plain JSON', async () => {
    const loaded = [];
    for (const [file, text] of [
      ['vmkit.config.ts', STARTER_TS],
      ['vmkit.config.json', STARTER_JSON],
    ] as const) {
      const project = mkdtempSync(join(scratch, 'starter-'));
      writeFileSync(join(project, file), text);
      const config = await loadProjectConfig(project);
      assert.equal(config.defaultVm, 'dev', file);
      loaded.push(config.vms.dev);
    }
    assert.doesNotMatch(STARTER_JSON, /\/\//, 'the JSON starter has no comments');
    for (const dev of loaded) {
      assert.equal(dev?.image, 'tiny');
      assert.equal(dev?.defaultCommand, 'test');
      assert.equal(dev?.sync[0]?.guest, '/work/project');
    }
  });

  it('media images: { disk } and { iso, install } with defaults; errors name the field at fault', () => {
    const file = join(scratch, 'vmkit.config.json');
    const config = parseConfig(
      {
        vms: {
          disk: { image: { disk: 'vm/base.qcow2', agent: 'tiny' } },
          iso: {
            image: {
              iso: 'installer.iso',
              install: [{ name: 'boot', expect: { regex: 'login: $', flags: 'i' }, sendLine: 'root' }],
            },
          },
        },
      },
      file,
    );
    assert.deepEqual(selectVm(config, 'disk').image, {
      disk: 'vm/base.qcow2',
      agent: 'tiny',
      firmware: 'bios',
    });
    const iso = selectVm(config, 'iso').image;
    assert.ok(isIsoImage(iso));
    assert.equal(iso.diskMiB, 4096);
    assert.equal(hasAgent(iso), false);
    const [step] = installSteps(iso, scratch, 'vms.iso.image');
    assert.deepEqual(step?.expect, /login: $/i);
    assert.deepEqual(problems({ vms: { a: { image: { iso: 'x.iso' } } } }), [
      'vms.a.image.install: must be a list of console steps or a .json file holding them',
    ]);
    assert.deepEqual(problems({ vms: { a: { image: { disk: 'x.img', size: 3 } } } }), [
      'vms.a.image: unknown field "size"',
    ]);
    assert.match(
      problems({ vms: { a: { image: { disk: 'x.img', agent: 'bsd' } } } })[0] ?? '',
      /^vms\.a\.image\.agent: must be "tiny" or "debian"/,
    );
    assert.match(
      problems({ vms: { a: { image: 'fedora' } } })[0] ?? '',
      /^vms\.a\.image: must be "tiny", "debian", a recipe file/,
    );
    assert.deepEqual(problems({ vms: { a: { image: { iso: 'x.iso', install: [{ name: 'idle' }] } } } }), [
      'vms.a.image.install.0: the step neither expects nor sends anything (got an object)',
    ]);
  });

  it('an install is identified by its ISO, steps, disk size and firmware only', () => {
    const config = parseConfig(
      { vms: { a: { image: { iso: 'x.iso', install: [{ name: 'go', expect: 'login:' }] } } } },
      join(scratch, 'vmkit.config.json'),
    );
    const vm = selectVm(config, 'a');
    const key = (change: Record<string, unknown>) =>
      installKey({ project: config, vm: { ...vm, image: { ...(vm.image as object), ...change } } } as never, {
        ...(vm.image as IsoImageConfig),
        ...change,
      });
    assert.equal(key({}), key({ installTimeoutMs: 5, agent: 'tiny', readyWhen: 'x' }));
    assert.notEqual(key({}), key({ diskMiB: 128 }));
    assert.notEqual(key({}), key({ install: [{ name: 'go', expect: /login:/ }] }));
    assert.notEqual(key({}), key({ iso: 'y.iso' }));
  });

  it('install steps from a file: a file that does not parse is one line naming it', () => {
    const image = {
      iso: 'x.iso',
      install: 'steps.json',
      diskMiB: 64,
      installTimeoutMs: 1000,
      firmware: 'bios' as const,
    };
    writeFileSync(join(scratch, 'steps.json'), JSON.stringify([{ name: 'x', expect: 3 }]));
    assert.throws(
      () => installSteps(image, scratch, 'vms.a.image'),
      /^ConfigError: vms\.a\.image\.install: .*steps\.json: 0\.expect: must be text, a RegExp or \{ regex, flags\? \}$/,
    );
    writeFileSync(join(scratch, 'steps.json'), JSON.stringify([{ name: 'boot', sendLine: '' }]));
    assert.deepEqual(installSteps(image, scratch, 'vms.a.image'), [
      { name: 'boot', sendLine: '', expect: undefined, until: undefined },
    ]);
  });

  it('exec arguments: the VM name before --, the command after', () => {
    assert.deepEqual(splitAtDashes(['--', 'ls', '-l']), { name: undefined, command: ['ls', '-l'] });
    assert.deepEqual(splitAtDashes(['dev', '--', 'ls']), { name: 'dev', command: ['ls'] });
    assert.deepEqual(splitAtDashes(['ls', '-l']), { command: ['ls', '-l'] });
    assert.throws(() => splitAtDashes(['a', 'b', '--', 'ls']), ConfigError);
    assert.throws(() => splitAtDashes(['dev', '--']), /no command after --/);
  });
});

describe('sync plan', () => {
  it('excludes like gitignore: names anywhere, anchored paths, folders with their contents, **', () => {
    const out = globMatcher(['*.log', '/build', 'docs/**/*.tmp', 'cache/']);
    assert.ok(out('.git/config') && out('.vmkit/dev/state.json'), 'vcs and vmkit state are always out');
    assert.ok(out('run.log') && out('deep/down/run.log'));
    assert.ok(out('build') && out('build/out.o') && !out('src/build'));
    assert.ok(out('docs/a/b/x.tmp') && out('docs/x.tmp') && !out('docs/x.md'));
    assert.ok(out('cache/x') && out('src/cache/y'));
    assert.ok(!out('src/main.ts') && !out('logfile'));
  });

  it('moves only what changed, deletes what is gone, replaces what changed type', async () => {
    const tree = join(scratch, 'tree');
    mkdirSync(join(tree, 'src', 'old'), { recursive: true });
    writeFileSync(join(tree, 'src', 'a.txt'), 'a');
    writeFileSync(join(tree, 'src', 'b.txt'), 'b');
    writeFileSync(join(tree, 'src', 'old', 'x'), 'x');
    writeFileSync(join(tree, 'skip.log'), 'no');
    symlinkSync('a.txt', join(tree, 'src', 'link'));
    const first = await hostManifest(tree, ['*.log'], false);
    assert.deepEqual(Object.keys(first).sort(), [
      'src',
      'src/a.txt',
      'src/b.txt',
      'src/link',
      'src/old',
      'src/old/x',
    ]);
    assert.equal(first['src/link']?.target, 'a.txt');
    const initial = planSync({}, first);
    assert.equal(initial.send.length, 6);
    assert.deepEqual(initial.remove, []);
    assert.deepEqual(planSync(first, first), { send: [], remove: [], deleted: [], unchanged: 6, bytes: 0 });

    writeFileSync(join(tree, 'src', 'a.txt'), 'changed');
    rmSync(join(tree, 'src', 'old'), { recursive: true });
    rmSync(join(tree, 'src', 'b.txt'));
    symlinkSync('a.txt', join(tree, 'src', 'b.txt')); // a file became a symlink
    const later = new Date(Date.now() + 5000);
    utimesSync(join(tree, 'src', 'a.txt'), later, later);
    const plan = planSync(first, await hostManifest(tree, ['*.log'], false));
    assert.deepEqual(plan.send, ['src/a.txt', 'src/b.txt']);
    assert.deepEqual(
      plan.remove.sort(),
      ['src/a.txt', 'src/b.txt', 'src/old'],
      'the folder goes whole, not file by file',
    );
    assert.deepEqual(plan.deleted.sort(), ['src/old', 'src/old/x']);
  });

  it('with gitignore, lists what git does not ignore (tracked and untracked)', async () => {
    const repo = join(scratch, 'repo');
    mkdirSync(join(repo, 'src'), { recursive: true });
    await new Promise((resolve) => spawn('git', ['init', '-q', repo]).on('close', resolve));
    writeFileSync(join(repo, '.gitignore'), 'secret.txt\n');
    writeFileSync(join(repo, 'secret.txt'), 'no');
    writeFileSync(join(repo, 'src', 'main.c'), 'int main;');
    const manifest = await hostManifest(repo, [], true);
    assert.deepEqual(Object.keys(manifest).sort(), ['.gitignore', 'src', 'src/main.c']);
  });
});

describe('state', () => {
  it('the lock excludes a second taker, names its owner, and is freed after the work', async () => {
    const dir = join(scratch, 'lock');
    mkdirSync(dir);
    const release = await acquireLock(dir, 'up');
    await assert.rejects(acquireLock(dir, 'down'), (error: Error) => {
      assert.ok(error instanceof LockedError);
      assert.match(error.message, new RegExp(`locked by process ${process.pid} \\(up\\)`));
      return true;
    });
    const waiting = withLock(dir, 'down', async () => 'ran', 5000);
    release();
    assert.equal(await waiting, 'ran');
    assert.equal(await withLock(dir, 'again', async () => 'free'), 'free');
  });

  it('a lock left by a dead process is taken over', async () => {
    const dir = join(scratch, 'stale');
    mkdirSync(dir);
    const child = spawn(process.execPath, ['-e', '']);
    const deadPid = child.pid as number;
    await new Promise((resolve) => child.on('exit', resolve));
    writeFileSync(join(dir, 'lock'), JSON.stringify({ pid: deadPid, startTicks: '1', what: 'up' }));
    assert.equal(await withLock(dir, 'up', async () => 'taken over'), 'taken over');
  });

  it('sockets go in the VM folder while their paths fit 107 bytes, else in a short folder under the temp dir', () => {
    const short = join(scratch, '.vmkit', 'dev');
    assert.equal(runDir(short), join(short, 'run'));
    const deep = join(scratch, 'd'.repeat(100), '.vmkit', 'dev');
    const moved = runDir(deep);
    assert.equal(moved, runDir(deep), 'the same folder every time');
    assert.match(moved, new RegExp(`^${tmpdir()}/vmkit-[0-9a-f]{16}$`));
    assert.ok(Buffer.byteLength(join(moved, 'xfer.sock')) <= 107);
  });

  it('atomic writes leave the old file or the new one, never a part', () => {
    const file = join(scratch, 'state.json');
    writeFileAtomic(file, '{"a":1}');
    writeFileAtomic(file, '{"a":2}');
    assert.equal(readFileSync(file, 'utf8'), '{"a":2}');
  });
});

describe('up refused for a taken host port', () => {
  it('leaves no disk behind, and the VM still shows as absent', async () => {
    const root = mkdtempSync(join(scratch, 'taken-'));
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const port = (holder.address() as { port: number }).port;
    try {
      const project = parseConfig(
        { vms: { dev: { ports: [{ guest: 80, host: port }] } } },
        join(root, 'vmkit.config.json'),
      );
      const pvm = projectVm(project, selectVm(project, 'dev'));
      await assert.rejects(
        up(pvm, () => {}),
        (error: Error) =>
          error instanceof ConfigError &&
          new RegExp(`host port ${port} .* is already taken`).test(error.message),
      );
      assert.ok(!existsSync(dataDisk(pvm.dir)), 'no data disk was made');
      assert.equal(vmStatus(project, 'dev').state, 'absent');
    } finally {
      holder.close();
    }
  });
});

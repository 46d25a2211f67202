// rsync as `vmkit sync --method rsync` runs it, here between two host folders with the host's
// real rsync: what it sends is exactly vmkit's manifest (excludes, odd names), and its itemized
// output and stats become the same report as vmkit's own transfer gives.
import assert from 'node:assert/strict';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { splitAtDashes } from '../../src/cli/commands/project.js';
import { parseConfig, selectVm, type VmConfig } from '../../src/project/config.js';
import { hostManifest } from '../../src/project/manifest.js';
import { forwardedGuestPorts } from '../../src/project/ports.js';
import { excludePattern, parseRsyncOutput, rsyncArgs, writeExcludeFile } from '../../src/project/rsync.js';
import { runTool } from '../../src/util/exec.js';

const scratch = mkdtempSync(join(tmpdir(), 'vmkit-rsync-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const walkSorted = async (dir: string) =>
  (await runTool('find', ['.', '-mindepth', '1'], { cwd: dir })).stdout.trim().split('\n').sort();

describe('sync by rsync', () => {
  it('sends exactly the manifest: excludes, folders, names with wildcards and backslashes', async () => {
    const source = join(scratch, 'source');
    const target = join(scratch, 'target');
    mkdirSync(join(source, 'src', 'build'), { recursive: true });
    mkdirSync(join(source, 'node_modules', 'x'), { recursive: true });
    mkdirSync(target);
    for (const name of [
      'a*b',
      '[x]',
      'back\\slash',
      'q?',
      'keep.txt',
      'run.log',
      'src/main.c',
      'src/build/out.o',
      'we[ird]',
      'wei',
    ])
      writeFileSync(join(source, name), name);
    writeFileSync(join(source, 'node_modules', 'x', 'index.js'), '');
    const manifest = await hostManifest(source, ['*.log', 'node_modules', 'src/build', 'we[ird]'], false);
    const excludes = join(scratch, 'excludes');
    await writeExcludeFile(excludes, source, manifest);
    const { stdout } = await runTool('rsync', rsyncArgs(excludes, `${source}/`, `${target}/`));
    assert.deepEqual(
      await walkSorted(target),
      Object.keys(manifest)
        .map((path) => `./${path}`)
        .sort(),
    );
    assert.ok(!('run.log' in manifest) && !('we[ird]' in manifest), 'left out');
    // An unescaped rsync pattern /we[ird] would leave out wei too.
    assert.ok('wei' in manifest && 'a*b' in manifest && '[x]' in manifest && 'back\\slash' in manifest);
    const report = parseRsyncOutput('/g', stdout);
    assert.equal(report.sent, Object.keys(manifest).length);
    assert.equal(report.deleted, 0);
    assert.equal(excludePattern('a*b'), '/a\\*b');
    assert.equal(excludePattern('plain/name'), '/plain/name');
  });

  it('reports changes, deletions, symlinks and mode changes; nothing when nothing changed', async () => {
    const source = join(scratch, 'two');
    const target = join(scratch, 'two-target');
    mkdirSync(join(source, 'dir'), { recursive: true });
    mkdirSync(target);
    writeFileSync(join(source, 'dir', 'one'), 'one');
    writeFileSync(join(source, 'gone'), 'gone');
    writeFileSync(join(source, 'mode'), 'mode');
    const excludes = join(scratch, 'none');
    writeFileSync(excludes, '');
    const sync = async () =>
      parseRsyncOutput(
        '/g',
        (await runTool('rsync', rsyncArgs(excludes, `${source}/`, `${target}/`))).stdout,
      );
    const first = await sync();
    assert.equal(first.sent, 4);
    assert.equal(first.bytes, 11);
    const again = await sync();
    assert.deepEqual([again.sent, again.deleted, again.unchanged], [0, 0, 4]);
    rmSync(join(source, 'gone'));
    writeFileSync(join(source, 'dir', 'one'), 'changed');
    symlinkSync('dir/one', join(source, 'link'));
    chmodSync(join(source, 'mode'), 0o700);
    const changed = await sync();
    assert.deepEqual([changed.sent, changed.deleted], [3, 1]);
    assert.deepEqual(changed.sample.sort(), ['-gone', 'dir/one', 'link', 'mode']);
    assert.equal(readlinkSync(join(target, 'link')), 'dir/one');
    assert.equal(statSync(join(target, 'mode')).mode & 0o777, 0o700);
  });
});

describe('ssh arguments and ports', () => {
  it('ssh: the one word is the VM name; a command only after --', () => {
    const ssh = { what: 'ssh', commandOptional: true };
    assert.deepEqual(splitAtDashes([], ssh), { name: undefined, command: [] });
    assert.deepEqual(splitAtDashes(['dev'], ssh), { name: 'dev', command: [] });
    assert.deepEqual(splitAtDashes(['dev', '--', 'ls', '-l'], ssh), { name: 'dev', command: ['ls', '-l'] });
    assert.deepEqual(splitAtDashes(['--', 'uname'], ssh), { name: undefined, command: ['uname'] });
    assert.throws(() => splitAtDashes(['dev', 'ls'], ssh), /ssh: expected \[name\] \[-- command\]/);
  });

  it('the sshd port is forwarded for every VM: 22 unless configured', () => {
    const config = parseConfig(
      {
        vms: {
          a: { ports: [{ guest: 80 }] },
          b: { sshPort: 2222 },
          c: { ports: [{ guest: 22, host: 2022 }] },
        },
      },
      '/p/vmkit.config.json',
    );
    const [a, b, c] = ['a', 'b', 'c'].map((name) => selectVm(config, name));
    assert.deepEqual(forwardedGuestPorts(a as VmConfig), [80, 22]);
    assert.deepEqual(forwardedGuestPorts(b as VmConfig), [2222]);
    assert.deepEqual(forwardedGuestPorts(c as VmConfig), [22]);
    assert.equal(a?.syncMethod, 'vmkit');
  });
});

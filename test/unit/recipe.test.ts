// Image recipes: checked input, defaults, and what their content-addressed key covers.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseSimulation } from '../../src/builder/packages.js';
import { debianInputs, mmdebstrapArgs } from '../../src/images/debian-image.js';
import { isImagePath, parseRecipe, recipeScripts } from '../../src/images/recipe.js';
import { ContentStore } from '../../src/images/store.js';
import { buildImage, ConfigError } from '../../src/index.js';

function refusesOneLine(run: () => unknown, pattern: RegExp) {
  assert.throws(run, (error: Error) => {
    assert.ok(error instanceof ConfigError, String(error));
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes('\n'), `one line: ${error.message}`);
    return true;
  });
}

describe('parseRecipe', () => {
  test('fills in the defaults; the plain base is named debian, a derived one debian-custom', () => {
    assert.deepEqual(parseRecipe({ base: 'debian' }), {
      base: 'debian',
      suite: 'bookworm',
      packages: [],
      files: {},
      run: [],
      name: 'debian',
    });
    assert.equal(parseRecipe({ base: 'debian', packages: ['nginx'] }).name, 'debian-custom');
    assert.equal(parseRecipe({ base: 'debian', packages: ['nginx'], name: 'web' }).name, 'web');
  });

  test('sorts and de-duplicates packages, and sorts files, so equal recipes are equal', () => {
    const a = parseRecipe({
      base: 'debian',
      packages: ['nginx', 'curl', 'nginx'],
      files: { '/b': '2', '/a': '1' },
    });
    const b = parseRecipe({ base: 'debian', packages: ['curl', 'nginx'], files: { '/a': '1', '/b': '2' } });
    assert.deepEqual(a, b);
    assert.equal(JSON.stringify(a), JSON.stringify(b));
  });

  test('refuses file paths that escape the image, in one line naming the path', () => {
    for (const path of ['../etc/passwd', '/etc/../../x', 'etc/motd', '/', '/etc/', '/a\0b']) {
      assert.equal(isImagePath(path), false, path);
      refusesOneLine(
        () => parseRecipe({ base: 'debian', files: { [path]: 'x' } }),
        /^buildImage recipe: files.*must be an absolute path inside the image/,
      );
    }
    assert.equal(isImagePath('/etc/motd'), true);
    assert.equal(isImagePath('/var/www/html/index.html'), true);
  });

  test('refuses other bad input in one line', () => {
    refusesOneLine(() => parseRecipe({ base: 'fedora' }), /^buildImage recipe: base: must be "debian"/);
    refusesOneLine(
      () => parseRecipe({ base: 'debian', packages: ['ngi nx'] }),
      /packages\[0\]: is not a Debian package name/,
    );
    refusesOneLine(() => parseRecipe({ base: 'debian', packages: 'nginx' }), /packages/);
    refusesOneLine(
      () => parseRecipe({ base: 'debian', files: { '/etc/motd': 42 } }),
      /file contents as a string/,
    );
    refusesOneLine(() => parseRecipe({ base: 'debian', run: 'systemctl enable x' }), /run/);
    refusesOneLine(() => parseRecipe({ base: 'debian', name: 'Web Server' }), /name/);
    refusesOneLine(() => parseRecipe({ base: 'debian', pakages: ['nginx'] }), /unknown option "pakages"/);
  });
});

describe('recipe keys', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  const keyOf = async (recipe: object) => {
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-recipe-key-'));
    dirs.push(dir);
    return ContentStore.key(await debianInputs(parseRecipe(recipe), join(dir, 'memo.json')));
  };

  test('cover the packages, the files, the commands and the name, not their order', async () => {
    const base = await keyOf({ base: 'debian', packages: ['nginx'], files: { '/etc/motd': 'hi\n' } });
    assert.equal(
      await keyOf({ base: 'debian', packages: ['nginx', 'nginx'], files: { '/etc/motd': 'hi\n' } }),
      base,
    );
    const variants = [
      { base: 'debian', files: { '/etc/motd': 'hi\n' } },
      { base: 'debian', packages: ['nginx', 'curl'], files: { '/etc/motd': 'hi\n' } },
      { base: 'debian', packages: ['nginx'], files: { '/etc/motd': 'hello\n' } },
      { base: 'debian', packages: ['nginx'], files: { '/etc/issue': 'hi\n' } },
      { base: 'debian', packages: ['nginx'], files: { '/etc/motd': 'hi\n' }, run: ['true'] },
      { base: 'debian', packages: ['nginx'], files: { '/etc/motd': 'hi\n' }, name: 'web' },
    ];
    const keys = new Set([base, ...(await Promise.all(variants.map(keyOf)))]);
    assert.equal(keys.size, variants.length + 1, 'every variant has a key of its own');
  });

  test('cover the package versions apt resolved', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-recipe-key-'));
    dirs.push(dir);
    const inputs = await debianInputs(
      parseRecipe({ base: 'debian', packages: ['nginx'] }),
      join(dir, 'memo.json'),
    );
    const nginx = inputs.packages.find((pkg) => pkg.startsWith('nginx='));
    assert.match(nginx ?? '', /^nginx=\d/);
    assert.ok(inputs.packages.some((pkg) => pkg.startsWith('systemd=')));
    const older = { ...inputs, packages: inputs.packages.map((pkg) => (pkg === nginx ? 'nginx=0.1' : pkg)) };
    assert.notEqual(ContentStore.key(older), ContentStore.key(inputs));
  });

  test('mmdebstrap installs the exact versions the key names', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-recipe-key-'));
    dirs.push(dir);
    const inputs = await debianInputs(
      parseRecipe({ base: 'debian', packages: ['nginx'] }),
      join(dir, 'memo.json'),
    );
    const include = mmdebstrapArgs(inputs, dir).find((arg) => arg.startsWith('--include='));
    assert.deepEqual(include?.slice('--include='.length).split(',').sort(), [...inputs.packages].sort());
    assert.ok(inputs.packages.every((pkg) => /^[a-z0-9.+-]+=\S+$/.test(pkg)));
  });

  test('an unknown package is refused in one line naming it, with nothing left in the cache', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'vmkit-recipe-cache-'));
    dirs.push(cacheDir);
    await assert.rejects(
      buildImage({ base: 'debian', packages: ['no-such-package-vmkit'] }, { cacheDir }),
      (error: Error) => {
        assert.ok(error instanceof ConfigError, String(error));
        assert.match(error.message, /unknown Debian package "no-such-package-vmkit"/);
        assert.ok(!error.message.includes('\n'));
        return true;
      },
    );
    const images = await readdir(join(cacheDir, 'images')).catch(() => [] as string[]);
    assert.deepEqual(images, []);
  });
});

describe('a recipe built in a builder VM', () => {
  test("the packages to fetch are apt's simulated installs (new and upgraded), nothing else", () => {
    const output = [
      'NOTE: This is only a simulation!',
      'Inst libonig5 (6.9.8-1 Debian:12.15/oldstable [amd64])',
      'Inst libc6 [2.36-9+deb12u9] (2.36-9+deb12u10 Debian:12.15/oldstable [amd64])',
      'Conf libonig5 (6.9.8-1 Debian:12.15/oldstable [amd64])',
    ].join('\n');
    assert.deepEqual(
      parseSimulation(output).map((p) => `${p.name}=${p.version}`),
      ['libonig5=6.9.8-1', 'libc6=2.36-9+deb12u10'],
    );
  });

  test('its scripts copy each file from the transfer folder and run the steps under set -e', () => {
    const scripts = recipeScripts(
      parseRecipe({ base: 'debian', files: { "/etc/it's": 'x' }, run: ['a', 'b'] }),
    );
    assert.deepEqual(scripts.files, ['x']);
    assert.equal(scripts.filesSh, "set -e\nmkdir -p '/etc'\ncp /tmp/vmkit-recipe/files/0 '/etc/it'\\''s'\n");
    assert.equal(scripts.runSh, 'set -e\na\nb\n');
  });
});

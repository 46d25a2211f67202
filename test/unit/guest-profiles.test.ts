import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { debianProfile } from '../../src/guest/profiles/debian.js';
import { profileNamed } from '../../src/guest/profiles/index.js';
import type { RestoreSetup } from '../../src/guest/profiles/profile.js';
import { tinyProfile } from '../../src/guest/profiles/tiny.js';
import { agentBanner } from '../../src/guest/readiness.js';

const ENTROPY = '00ff'.repeat(16);
const restore = (overrides: Partial<RestoreSetup> = {}): RestoreSetup => ({
  clockSeconds: 1_700_000_000,
  entropyHex: ENTROPY,
  renumber: [],
  hosts: {},
  ...overrides,
});

const scratch = mkdtempSync(join(tmpdir(), 'vmkit-setup-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/**
 * Runs a set-up script as a guest would, in /bin/sh, with `ip`, `hostname` and `date` replaced by
 * stubs that log their arguments, and /etc and /dev/urandom moved into a scratch folder. Returns
 * the commands run and the lines written to each file, in the order they happened, then the
 * persistent journal's folders (a link as "name -> target"). `prepare` may put files in the
 * scratch folder first (`machine-id`, `journal/`).
 */
function runInShell(script: string, prepare?: (dir: string) => void): string[] {
  const dir = mkdtempSync(join(scratch, 'run-'));
  prepare?.(dir);
  const log = join(dir, 'log');
  for (const tool of ['ip', 'hostname', 'date']) {
    writeFileSync(join(dir, tool), `#!/bin/sh\necho "${tool} $*" >> "${log}"\n`);
    chmodSync(join(dir, tool), 0o755);
  }
  writeFileSync(join(dir, 'hosts'), '127.0.0.1 localhost\n127.0.1.1 old\n');
  const moved = script
    .replaceAll('/etc/hosts', join(dir, 'hosts'))
    .replaceAll('/etc/hostname', join(dir, 'hostname-file'))
    .replaceAll('/etc/resolv.conf', join(dir, 'resolv.conf'))
    .replaceAll('/etc/machine-id', join(dir, 'machine-id'))
    .replaceAll('/var/log/journal', join(dir, 'journal'))
    .replaceAll('/run/log/journal', join(dir, 'run-journal'))
    .replaceAll('/dev/urandom', join(dir, 'urandom'));
  execFileSync('/bin/sh', ['-c', moved], { env: { PATH: `${dir}:/usr/bin:/bin` } });
  const read = (name: string) => {
    try {
      return readFileSync(join(dir, name), 'utf8');
    } catch {
      return undefined;
    }
  };
  const files = ['hosts', 'hostname-file', 'resolv.conf', 'urandom', 'machine-id'].flatMap((name) => {
    const text = read(name);
    return text === undefined ? [] : [`${name}: ${JSON.stringify(text)}`];
  });
  const folders = ['journal', 'run-journal'].flatMap((base) => {
    const journal = join(dir, base);
    if (!existsSync(journal)) return [];
    return readdirSync(journal, { withFileTypes: true })
      .map((entry) =>
        entry.isSymbolicLink()
          ? `${base} ${entry.name} -> ${readlinkSync(join(journal, entry.name))}`
          : `${base} ${entry.name}`,
      )
      .sort();
  });
  return [...(read('log') ?? '').split('\n').filter(Boolean), ...files, ...folders];
}

const HOSTS_BEFORE = '127.0.0.1 localhost\n127.0.1.1 old\n';

describe('tiny profile: afterBoot', () => {
  test('hostname, two NICs (one with an address, one without), two hosts', () => {
    const script = tinyProfile.afterBoot({
      hostname: 'server',
      nics: [{ index: 0, address: '192.168.1.1/24' }, { index: 1 }],
      hosts: { server: '192.168.1.1', client: '192.168.1.2' },
    });
    assert.deepEqual(runInShell(script), [
      'hostname server',
      'ip link set eth0 up',
      'ip addr add 192.168.1.1/24 dev eth0',
      'ip link set eth1 up',
      `hosts: ${JSON.stringify(`${HOSTS_BEFORE}192.168.1.1 server\n192.168.1.2 client\n`)}`,
    ]);
  });

  test('a NIC with a MAC of its own, and the NIC to the host with gateway, resolver and a NIC out', () => {
    const script = tinyProfile.afterBoot({
      hostname: 'a',
      nics: [{ index: 3, address: '10.0.0.2/8', mac: '52:54:00:00:00:03' }],
      hostNic: {
        index: 4,
        address: '10.0.2.15/24',
        gateway: '10.0.2.2',
        nameserver: '10.0.2.3',
        outbound: { index: 5, address: '10.0.3.15/24', gateway: '10.0.3.2', nameserver: '10.0.3.3' },
      },
      hosts: {},
    });
    assert.deepEqual(runInShell(script), [
      'hostname a',
      'ip link set eth3 address 52:54:00:00:00:03',
      'ip link set eth3 up',
      'ip addr add 10.0.0.2/8 dev eth3',
      'ip link set eth4 up',
      'ip addr add 10.0.2.15/24 dev eth4',
      'ip route add default via 10.0.2.2',
      'ip link set eth5 up',
      'ip addr add 10.0.3.15/24 dev eth5',
      'ip route add default via 10.0.3.2 dev eth5',
      `hosts: ${JSON.stringify(HOSTS_BEFORE)}`,
      `resolv.conf: ${JSON.stringify('nameserver 10.0.3.3\n')}`,
    ]);
  });

  test('no NICs and no hosts: only the hostname', () => {
    assert.deepEqual(runInShell(tinyProfile.afterBoot({ hostname: 'solo', nics: [], hosts: {} })), [
      'hostname solo',
      `hosts: ${JSON.stringify(HOSTS_BEFORE)}`,
    ]);
  });

  test('a single quote, a space or a semicolon in a value stays one argument: nothing else runs', () => {
    const script = tinyProfile.afterBoot({
      hostname: "it's",
      nics: [{ index: 0, address: "1.2.3.4/24'; reboot; '" }],
      hosts: { "o'brien": "10.0.0.1'" },
    });
    assert.deepEqual(runInShell(script), [
      "hostname it's",
      'ip link set eth0 up',
      "ip addr add 1.2.3.4/24'; reboot; ' dev eth0",
      `hosts: ${JSON.stringify(`${HOSTS_BEFORE}10.0.0.1' o'brien\n`)}`,
    ]);
  });
});

describe('tiny profile: afterRestore', () => {
  test('hostname undefined: clock and entropy only, no hostname', () => {
    assert.deepEqual(runInShell(tinyProfile.afterRestore(restore())), [
      'date -s @1700000000',
      `hosts: ${JSON.stringify(HOSTS_BEFORE)}`,
      `urandom: ${JSON.stringify(ENTROPY)}`,
    ]);
  });

  test('a new hostname, one renumbered NIC, entropy, clock and hosts', () => {
    const script = tinyProfile.afterRestore(
      restore({
        hostname: 'clone-1',
        clockSeconds: 1_712_345_678,
        entropyHex: 'deadbeef',
        renumber: [{ index: 1, address: '192.168.2.3/24', mac: '52:54:00:12:34:56' }],
        hosts: { server: '192.168.1.1', 'clone-1': '192.168.2.3' },
      }),
    );
    assert.deepEqual(runInShell(script), [
      'date -s @1712345678',
      'hostname clone-1',
      'ip link set eth1 down',
      'ip link set eth1 address 52:54:00:12:34:56',
      'ip addr flush dev eth1',
      'ip addr add 192.168.2.3/24 dev eth1',
      'ip link set eth1 up',
      `hosts: ${JSON.stringify(`${HOSTS_BEFORE}192.168.1.1 server\n192.168.2.3 clone-1\n`)}`,
      `urandom: ${JSON.stringify('deadbeef')}`,
    ]);
  });

  test('two renumbered NICs, in the order given', () => {
    const script = tinyProfile.afterRestore(
      restore({
        renumber: [
          { index: 2, address: '10.0.2.5/24', mac: '52:54:00:00:00:22' },
          { index: 0, address: '10.0.0.5/24', mac: '52:54:00:00:00:00' },
        ],
      }),
    );
    assert.deepEqual(runInShell(script).slice(1, -2), [
      'ip link set eth2 down',
      'ip link set eth2 address 52:54:00:00:00:22',
      'ip addr flush dev eth2',
      'ip addr add 10.0.2.5/24 dev eth2',
      'ip link set eth2 up',
      'ip link set eth0 down',
      'ip link set eth0 address 52:54:00:00:00:00',
      'ip addr flush dev eth0',
      'ip addr add 10.0.0.5/24 dev eth0',
      'ip link set eth0 up',
    ]);
  });

  test('an empty hostname is still set (only undefined means unchanged)', () => {
    assert.equal(runInShell(tinyProfile.afterRestore(restore({ hostname: '' })))[1], 'hostname ');
  });
});

describe('restoreByAgent: the identity request and the script for the rest', () => {
  test('tiny: clock, hostname and entropy to the agent, no script when nothing else is left', () => {
    const split = tinyProfile.restoreByAgent?.(restore({ hostname: 'clone-1', entropyHex: 'deadbeef' }));
    assert.deepEqual(split, {
      identity: { hostname: 'clone-1', hostnameFiles: false, entropy: Buffer.from('deadbeef', 'hex') },
      script: '',
    });
    assert.deepEqual(tinyProfile.restoreByAgent?.(restore())?.identity.hostname, undefined);
  });

  test('renumbered NICs and hosts lines stay in the script, without clock, hostname or entropy', () => {
    const split = tinyProfile.restoreByAgent?.(
      restore({
        hostname: 'clone-1',
        renumber: [{ index: 1, address: '192.168.2.3/24', mac: '52:54:00:12:34:56' }],
        hosts: { server: '192.168.1.1' },
      }),
    );
    assert.deepEqual(runInShell(split?.script ?? ''), [
      'ip link set eth1 down',
      'ip link set eth1 address 52:54:00:12:34:56',
      'ip addr flush dev eth1',
      'ip addr add 192.168.2.3/24 dev eth1',
      'ip link set eth1 up',
      `hosts: ${JSON.stringify(`${HOSTS_BEFORE}192.168.1.1 server\n`)}`,
    ]);
  });

  test('debian: the agent writes the hostname files too; an empty hostname is left to the script', () => {
    assert.equal(debianProfile.restoreByAgent?.(restore({ hostname: 'c' }))?.identity.hostnameFiles, true);
    assert.equal(tinyProfile.restoreByAgent?.(restore({ hostname: '' })), undefined);
  });

  test('debian: a new machine ID goes to the agent; tiny has none to write', () => {
    const setup = restore({ hostname: 'c', machineId: ID_B });
    assert.equal(debianProfile.restoreByAgent?.(setup)?.identity.machineId, ID_B);
    assert.equal(debianProfile.restoreByAgent?.(restore({ hostname: 'c' }))?.identity.machineId, undefined);
    assert.equal(tinyProfile.restoreByAgent?.(setup)?.identity.machineId, undefined);
    assert.ok(!runInShell(tinyProfile.afterRestore(setup)).some((line) => line.includes('machine-id')));
  });
});

const ID_A = 'a'.repeat(32);
const ID_B = 'b'.repeat(32);
const ID_C = 'c'.repeat(32);
/** A guest whose image wrote ID_A, with a persistent journal under it. */
const imageWithJournal = (dir: string) => {
  writeFileSync(join(dir, 'machine-id'), `${ID_A}\n`);
  mkdirSync(join(dir, 'journal', ID_A), { recursive: true });
};

describe('debian profile', () => {
  test('a new machine ID; the journal stays in view under it, through any number of new IDs', () => {
    const boot = debianProfile.afterBoot({ hostname: 'web', nics: [], hosts: {}, machineId: ID_B });
    assert.deepEqual(runInShell(boot, imageWithJournal).slice(-3), [
      `machine-id: ${JSON.stringify(`${ID_B}\n`)}`,
      `journal ${ID_A}`,
      `journal ${ID_B} -> ${ID_A}`,
    ]);
    // A clone of that machine: its link leads to the folder journald writes, not to a link.
    const again = debianProfile.afterRestore(restore({ hostname: 'c', machineId: ID_C }));
    const cloned = runInShell(again, (dir) => {
      imageWithJournal(dir);
      writeFileSync(join(dir, 'machine-id'), `${ID_B}\n`);
      symlinkSync(ID_A, join(dir, 'journal', ID_B));
    });
    assert.deepEqual(cloned.slice(-3), [
      `journal ${ID_A}`,
      `journal ${ID_B} -> ${ID_A}`,
      `journal ${ID_C} -> ${ID_A}`,
    ]);
    // The same ID again (a reboot): nothing changes.
    const reboot = debianProfile.afterBoot({ hostname: 'web', nics: [], hosts: {}, machineId: ID_A });
    assert.deepEqual(runInShell(reboot, imageWithJournal).slice(-2), [
      `machine-id: ${JSON.stringify(`${ID_A}\n`)}`,
      `journal ${ID_A}`,
    ]);
    // Before journald's first flush its persistent folder is not there yet: linked all the same.
    // The volatile one is not: the flush removes its folder, and a link to it would dangle
    // (journalctl then prints an error for it at every call).
    const early = (dir: string) => {
      writeFileSync(join(dir, 'machine-id'), `${ID_A}\n`);
      mkdirSync(join(dir, 'journal'));
      mkdirSync(join(dir, 'run-journal', ID_A), { recursive: true });
    };
    assert.deepEqual(runInShell(boot, early).slice(-2), [
      `journal ${ID_B} -> ${ID_A}`,
      `run-journal ${ID_A}`,
    ]);
    // A volatile journal alone (no persistent folder): it is the journal, and is linked.
    const volatile = (dir: string) => {
      writeFileSync(join(dir, 'machine-id'), `${ID_A}\n`);
      mkdirSync(join(dir, 'run-journal', ID_A), { recursive: true });
    };
    assert.deepEqual(runInShell(boot, volatile).slice(-2), [
      `run-journal ${ID_A}`,
      `run-journal ${ID_B} -> ${ID_A}`,
    ]);
    // No journal folder at all: no link.
    assert.deepEqual(
      runInShell(boot, (dir) => writeFileSync(join(dir, 'machine-id'), `${ID_A}\n`)).slice(-1),
      [`machine-id: ${JSON.stringify(`${ID_B}\n`)}`],
    );
    // A machine without one given keeps the image's.
    const kept = runInShell(
      debianProfile.afterBoot({ hostname: 'web', nics: [], hosts: {} }),
      imageWithJournal,
    );
    assert.deepEqual(kept.slice(-2), [`machine-id: ${JSON.stringify(`${ID_A}\n`)}`, `journal ${ID_A}`]);
  });

  test('a machine ID that is not 32 hex digits is refused with status 2', () => {
    for (const bad of ['A'.repeat(32), 'a'.repeat(31), '../../etc']) {
      const script = debianProfile.afterBoot({ hostname: 'web', nics: [], hosts: {}, machineId: bad });
      assert.throws(
        () => runInShell(script),
        (error: { status: number; stderr: Buffer }) => {
          assert.equal(error.status, 2);
          assert.match(error.stderr.toString(), /machine-id: not/);
          return true;
        },
      );
    }
  });

  test('after boot: /etc/hostname, and the name on 127.0.1.1 in place of the old one', () => {
    const script = debianProfile.afterBoot({ hostname: 'web', nics: [], hosts: { db: '10.0.0.2' } });
    assert.deepEqual(runInShell(script), [
      'hostname web',
      `hosts: ${JSON.stringify('127.0.0.1 localhost\n10.0.0.2 db\n127.0.1.1\tweb\n')}`,
      `hostname-file: ${JSON.stringify('web\n')}`,
    ]);
  });

  test('after restore: /etc/hostname only when the hostname changed', () => {
    assert.ok(!runInShell(debianProfile.afterRestore(restore())).some((line) => line.startsWith('hostname')));
    assert.ok(
      runInShell(debianProfile.afterRestore(restore({ hostname: 'c' }))).includes(`hostname-file: "c\\n"`),
    );
  });
});

describe('guest/profiles/setup.sh', () => {
  test('an unknown step or one with too few fields fails with status 2, naming it', () => {
    const setup = tinyProfile.afterBoot({ hostname: 'x', nics: [], hosts: {} });
    const body = setup.slice(setup.indexOf('\n') + 1);
    for (const [args, said] of [
      ["'flood' 'x'", /unknown step flood/],
      ["'nic' '0'", /nic: needs 3 fields, got 1/],
    ] as const) {
      assert.throws(
        () => execFileSync('/bin/sh', ['-c', `set -- ${args}\n${body}`], { stdio: 'pipe' }),
        (error: { status: number; stderr: Buffer }) => {
          assert.equal(error.status, 2);
          assert.match(error.stderr.toString(), said);
          return true;
        },
      );
    }
  });
});

describe('profiles', () => {
  test('the tiny profile is named tiny and waits for the agent banner', () => {
    assert.equal(tinyProfile.name, 'tiny');
    assert.equal(tinyProfile.readiness, agentBanner);
  });

  test("profileNamed('tiny') is the tiny profile", () => {
    assert.equal(profileNamed('tiny'), tinyProfile);
  });

  const unknown = (name: string) => () => {
    assert.throws(
      () => profileNamed(name),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
        assert.equal(error.message, `no guest profile ${JSON.stringify(name)} (known: tiny, debian, mock)`);
        return true;
      },
    );
  };

  for (const name of ['nope', '', 'Tiny']) {
    test(
      `profileNamed(${JSON.stringify(name)}) throws a ConfigError naming it and the known profiles`,
      unknown(name),
    );
  }

  // Names inherited from Object.prototype must not be found as profiles.
  for (const name of ['toString', '__proto__', 'constructor']) {
    test(
      `profileNamed(${JSON.stringify(name)}) (an Object.prototype key) throws a ConfigError`,
      unknown(name),
    );
  }
});

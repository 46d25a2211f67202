import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
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

describe('tiny profile: afterBoot', () => {
  test('golden: hostname, two NICs (one with an address, one without), two hosts', () => {
    const script = tinyProfile.afterBoot({
      hostname: 'server',
      nics: [{ index: 0, address: '192.168.1.1/24' }, { index: 1 }],
      hosts: { server: '192.168.1.1', client: '192.168.1.2' },
    });
    assert.equal(
      script,
      [
        "hostname 'server'",
        'ip link set eth0 up',
        "ip addr add '192.168.1.1/24' dev eth0",
        'ip link set eth1 up',
        "echo '192.168.1.1 server' >> /etc/hosts",
        "echo '192.168.1.2 client' >> /etc/hosts",
      ].join('\n'),
    );
  });

  test('NICs are named by their index, not their position', () => {
    assert.equal(
      tinyProfile.afterBoot({ hostname: 'a', nics: [{ index: 3, address: '10.0.0.2/8' }], hosts: {} }),
      ["hostname 'a'", 'ip link set eth3 up', "ip addr add '10.0.0.2/8' dev eth3"].join('\n'),
    );
  });

  test('no NICs and no hosts: only the hostname', () => {
    assert.equal(tinyProfile.afterBoot({ hostname: 'solo', nics: [], hosts: {} }), "hostname 'solo'");
  });

  test('a single quote in a hostname, an address or a host name is quoted for the shell', () => {
    const script = tinyProfile.afterBoot({
      hostname: "it's",
      nics: [{ index: 0, address: "1.2.3.4/24'; reboot; '" }],
      hosts: { "o'brien": "10.0.0.1'" },
    });
    assert.equal(
      script,
      [
        "hostname 'it'\\''s'",
        'ip link set eth0 up',
        "ip addr add '1.2.3.4/24'\\''; reboot; '\\''' dev eth0",
        "echo '10.0.0.1'\\'' o'\\''brien' >> /etc/hosts",
      ].join('\n'),
    );
  });
});

describe('tiny profile: afterRestore', () => {
  test('hostname undefined: clock and entropy only, no hostname line', () => {
    const script = tinyProfile.afterRestore(restore());
    assert.equal(
      script,
      ['date -s @1700000000 > /dev/null', `printf '%s' ${ENTROPY} > /dev/urandom`].join('\n'),
    );
    assert.doesNotMatch(script, /hostname/);
  });

  test('golden: a new hostname, one renumbered NIC, entropy, clock and hosts', () => {
    const script = tinyProfile.afterRestore(
      restore({
        hostname: 'clone-1',
        clockSeconds: 1_712_345_678,
        entropyHex: 'deadbeef',
        renumber: [{ index: 1, address: '192.168.2.3/24', mac: '52:54:00:12:34:56' }],
        hosts: { server: '192.168.1.1', 'clone-1': '192.168.2.3' },
      }),
    );
    assert.equal(
      script,
      [
        'date -s @1712345678 > /dev/null',
        "hostname 'clone-1'",
        "printf '%s' deadbeef > /dev/urandom",
        'ip link set eth1 down',
        'ip link set eth1 address 52:54:00:12:34:56',
        'ip addr flush dev eth1',
        "ip addr add '192.168.2.3/24' dev eth1",
        'ip link set eth1 up',
        "echo '192.168.1.1 server' >> /etc/hosts",
        "echo '192.168.2.3 clone-1' >> /etc/hosts",
      ].join('\n'),
    );
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
    const lines = script.split('\n');
    assert.equal(lines.length, 2 + 5 * 2);
    assert.deepEqual(lines.slice(2), [
      'ip link set eth2 down',
      'ip link set eth2 address 52:54:00:00:00:22',
      'ip addr flush dev eth2',
      "ip addr add '10.0.2.5/24' dev eth2",
      'ip link set eth2 up',
      'ip link set eth0 down',
      'ip link set eth0 address 52:54:00:00:00:00',
      'ip addr flush dev eth0',
      "ip addr add '10.0.0.5/24' dev eth0",
      'ip link set eth0 up',
    ]);
  });

  test('an empty hostname is still set (only undefined means unchanged)', () => {
    assert.equal(tinyProfile.afterRestore(restore({ hostname: '' })).split('\n')[1], "hostname ''");
  });

  test('a single quote in the hostname and a renumbered address is quoted for the shell', () => {
    const script = tinyProfile.afterRestore(
      restore({
        hostname: "x'y",
        renumber: [{ index: 0, address: "10.0.0.9/24'", mac: '52:54:00:00:00:09' }],
        hosts: { "x'y": '10.0.0.9' },
      }),
    );
    const lines = script.split('\n');
    assert.equal(lines[1], "hostname 'x'\\''y'");
    assert.equal(lines[6], "ip addr add '10.0.0.9/24'\\''' dev eth0");
    assert.equal(lines.at(-1), "echo '10.0.0.9 x'\\''y' >> /etc/hosts");
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

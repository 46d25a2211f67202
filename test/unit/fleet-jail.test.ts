// The VMM jail without a VM: tenant uids, and (as root) a real jail around a shell that reports
// what it sees: its uid, no capabilities, the fleet folder empty but for its own folders,
// read-only binds.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  allocateTenantUid,
  FLEET_ID_BLOCK,
  fleetIdBlock,
  JAIL_ID_BASE,
  jailed,
  jailUnavailable,
  prepareJail,
  userNamespaceUnavailable,
} from '../../src/fleet/vmm/jail.js';

describe('fleet VMM jail', () => {
  it("allocates a tenant the lowest uid of its fleet's block that no tenant holds", () => {
    const first = fleetIdBlock('/srv/fleet');
    assert.ok(first >= JAIL_ID_BASE && first + FLEET_ID_BLOCK <= JAIL_ID_BASE + 2 ** 28);
    assert.equal((first - JAIL_ID_BASE) % FLEET_ID_BLOCK, 0);
    assert.notEqual(fleetIdBlock('/srv/other'), first);
    assert.equal(allocateTenantUid('/srv/fleet', []), first);
    assert.equal(allocateTenantUid('/srv/fleet', [first, first + 2]), first + 1);
    assert.equal(allocateTenantUid('/srv/fleet', [first, first + 1, 7]), first + 2);
    const full = Array.from({ length: FLEET_ID_BLOCK }, (_, i) => first + i);
    assert.equal(allocateTenantUid('/srv/fleet', full), undefined);
  });

  it('says why it cannot jail without root', { skip: process.getuid?.() === 0 }, () => {
    assert.match(jailUnavailable() ?? '', /not root/);
  });

  it('as root, runs a program as the uid in a root holding only its files', {
    skip: process.getuid?.() !== 0 || jailUnavailable(),
  }, () => {
    const fleet = mkdtempSync('/tmp/vmkit-jail-test-');
    const ram = `/dev/shm/vmkit-jail-test-${process.pid}.ram`;
    const codeDirs: string[] = [];
    try {
      const own = join(fleet, 'vm', '1');
      const other = join(fleet, 'vm', '2');
      const net = join(fleet, 'net', 'alpha');
      for (const dir of [own, other, net]) mkdirSync(dir, { recursive: true });
      writeFileSync(join(fleet, 'fleet.sqlite3'), 'records');
      writeFileSync(join(other, 'secret'), 'not yours');
      writeFileSync(join(net, 'switch.sock'), '');
      writeFileSync(join(fleet, 'with space'), 'a read-only file whose path needs an fstab escape');
      writeFileSync(ram, '');
      // vmkit's code in /tmp, as in a fresh clone there: the jail's own /tmp must not hide it.
      const code = mkdtempSync('/tmp/vmkit-jail-code-');
      chmodSync(code, 0o755);
      writeFileSync(join(code, 'package.json'), '{}');
      codeDirs.push(code);
      const uid = allocateTenantUid(fleet, []) as number;
      const prepared = prepareJail({
        uid,
        dir: own,
        ramFile: ram,
        switchSocket: join(net, 'switch.sock'),
        reads: [net, join(fleet, 'with space')],
        fleetDir: fleet,
      });
      const spec = { ...prepared, code: [...prepared.code, code] };
      const script = [
        'id -u; grep CapEff /proc/self/status',
        `echo $(ls ${fleet}) / $(ls ${fleet}/vm)`,
        `ls /dev/shm; cat '${fleet}/with space'`,
        `test -e ${join(fleet, 'fleet.sqlite3')} && echo SEES-DB; test -e ${join(other, 'secret')} && echo SEES-OTHER`,
        `touch ${own}/mine && echo WROTE-OWN; touch ${net}/x 2>/dev/null || echo NET-READ-ONLY`,
        `test -e ${join(code, 'package.json')} && echo CODE-VISIBLE-IN-TMP || true`,
        // Its own pid namespace (its first process is pid 1; vmkit's pid is not there) and network.
        `test -e /proc/${process.pid} && echo SEES-HOST-PID; echo "PID1 $(tr '\\0' ' ' < /proc/1/cmdline | cut -c1-14)"`,
        `echo "NICS $(grep -c : /proc/net/dev)"`,
        // Its own user namespace: only its uid and gid are mapped (onto themselves).
        'echo "USERNS $(readlink /proc/self/ns/user)"; echo UIDMAP $(cat /proc/self/uid_map); echo GIDMAP $(cat /proc/self/gid_map)',
      ].join('\n');
      // Where the host allows a user namespace, the jail without one (its fallback) too.
      const variants = spec.userNamespace ? [spec, { ...spec, userNamespace: false }] : [spec];
      for (const variant of variants) {
        const command = jailed(variant, '/bin/sh', ['-c', script]);
        const result = spawnSync(command.program, command.args, { encoding: 'utf8', timeout: 30_000 });
        assert.equal(result.status, 0, result.stderr);
        const lines = result.stdout.split('\n');
        assert.equal(Number(lines[0]), uid);
        assert.match(lines[1] ?? '', /^CapEff:\s+0+$/);
        assert.equal(lines[2], 'net vm with space / 1', 'the fleet folder shows more than its own files');
        assert.equal(lines[3], ram.split('/').at(-1));
        assert.match(result.stdout, /a read-only file/);
        assert.doesNotMatch(result.stdout, /SEES-/);
        assert.match(result.stdout, /WROTE-OWN\nNET-READ-ONLY/);
        assert.match(
          result.stdout,
          /CODE-VISIBLE-IN-TMP/,
          "vmkit's code in /tmp is hidden by the jail's /tmp",
        );
        if (variant.namespaces) {
          assert.match(
            result.stdout,
            /^PID1 \/bin\/sh -c id/m,
            'the jailed program is not pid 1 of its namespace',
          );
          assert.match(result.stdout, /^NICS 1$/m, 'the jail sees network interfaces besides its loopback');
        }
        const userNs = /^USERNS (.+)$/m.exec(result.stdout)?.[1];
        assert.ok(userNs?.startsWith('user:['), result.stdout);
        if (!variant.userNamespace) assert.equal(userNs, readlinkSync('/proc/self/ns/user'));
        if (variant.userNamespace) {
          assert.notEqual(
            userNs,
            readlinkSync('/proc/self/ns/user'),
            "the jail shares the host's user namespace",
          );
          assert.match(result.stdout, new RegExp(`^UIDMAP ${uid} ${uid} 1$`, 'm'), 'other uids are mapped');
          assert.match(result.stdout, new RegExp(`^GIDMAP ${uid} ${uid} 1$`, 'm'), 'other gids are mapped');
        } else if (!spec.userNamespace)
          assert.ok(userNamespaceUnavailable(), 'no user namespace and no reason why');
      }
    } finally {
      rmSync(fleet, { recursive: true, force: true });
      rmSync(ram, { force: true });
      for (const dir of codeDirs) rmSync(dir, { recursive: true, force: true });
    }
  });
});

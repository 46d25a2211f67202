import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import type { KvmVerdict } from '../../src/backends/accel.js';
import { formatCheck } from '../../src/cli/commands/doctor.js';
import { type CgroupFacts, type CgroupGroup, checkCgroups } from '../../src/cli/commands/doctor-cgroups.js';
import {
  checkAccel,
  checkSubids,
  checkTool,
  checkUserns,
  parseSubids,
  type SubidFacts,
  type ToolNeed,
} from '../../src/cli/commands/doctor-checks.js';
import {
  defaultLookup,
  parseProcCgroup,
  readCgroupFacts,
  readUsernsFacts,
} from '../../src/cli/commands/doctor-facts.js';
import { ConfigError } from '../../src/errors.js';

describe('doctor: accelerator', () => {
  const denied: KvmVerdict = {
    usable: false,
    branch: 'no-permission',
    reason: '/dev/kvm is not ...',
    fix: 'sudo usermod -aG kvm bob',
  };

  test('KVM: ok, with the verdict as detail', () => {
    const verdict: KvmVerdict = { usable: true, branch: 'usable', reason: 'KVM works: x' };
    assert.deepEqual(checkAccel({ accel: 'kvm', reason: 'KVM works: x' }, verdict), {
      status: 'ok',
      what: 'accelerator',
      detail: 'kvm: KVM works: x',
    });
  });

  test('TCG for a fixable reason: warn, with the fix', () => {
    const check = checkAccel(
      { accel: 'tcg', reason: 'software emulation, slower than KVM: /dev/kvm is not ...; fix: x' },
      denied,
    );
    assert.equal(check.status, 'warn');
    assert.equal(check.detail, 'tcg: /dev/kvm is not ...');
    assert.equal(check.fix, 'sudo usermod -aG kvm bob');
  });

  test('TCG asked for by VMKIT_ACCEL: the decision says so', () => {
    const check = checkAccel(
      { accel: 'tcg', reason: 'VMKIT_ACCEL=tcg asks for TCG (software emulation)' },
      undefined,
    );
    assert.deepEqual(check, {
      status: 'warn',
      what: 'accelerator',
      detail: 'tcg: VMKIT_ACCEL=tcg asks for TCG (software emulation)',
    });
  });

  test('TCG forced by VMKIT_ACCEL where KVM would work: says both, no fix', () => {
    const verdict: KvmVerdict = { usable: true, branch: 'usable', reason: 'KVM works: x' };
    const check = checkAccel(
      { accel: 'tcg', reason: 'VMKIT_ACCEL=tcg asks for TCG (software emulation)' },
      verdict,
    );
    assert.deepEqual(check, {
      status: 'warn',
      what: 'accelerator',
      detail: 'tcg: VMKIT_ACCEL=tcg asks for TCG (software emulation); KVM works: x',
    });
  });

  test('VMKIT_ACCEL=kvm where KVM cannot be used: fail', () => {
    const check = checkAccel(new ConfigError('VMKIT_ACCEL=kvm asks for KVM, but ...'), denied);
    assert.equal(check.status, 'fail');
    assert.match(check.detail, /^VMKIT_ACCEL=kvm asks for KVM/);
  });
});

describe('doctor: user namespaces', () => {
  const failed = { ok: false, detail: 'unshare: write failed /proc/self/uid_map: Operation not permitted' };

  test('the probe works: ok, whatever the sysctls say', () => {
    const check = checkUserns({ apparmorRestrict: '1', probe: { ok: true, detail: '' } });
    assert.deepEqual(check, {
      status: 'ok',
      what: 'user namespaces',
      detail: 'unshare --user --map-root-user works',
    });
  });

  test('kernel.unprivileged_userns_clone=0 (older Debian kernels)', () => {
    const check = checkUserns({ unprivilegedClone: '0', maxUserNamespaces: 1000, probe: failed });
    assert.equal(check.status, 'warn');
    assert.match(
      check.detail,
      /^kernel.unprivileged_userns_clone is 0: unshare --user --map-root-user failed \(unshare: write failed/,
    );
    assert.match(check.detail, /mmdebstrap --mode=unshare/);
    assert.match(check.fix ?? '', /^sudo sysctl -w kernel.unprivileged_userns_clone=1/);
  });

  test('user.max_user_namespaces=0', () => {
    const check = checkUserns({ unprivilegedClone: '1', maxUserNamespaces: 0, probe: failed });
    assert.match(check.detail, /^user.max_user_namespaces is 0/);
    assert.match(check.fix ?? '', /^sudo sysctl -w user.max_user_namespaces=10000/);
  });

  test("Ubuntu 24.04's AppArmor restriction", () => {
    const check = checkUserns({ maxUserNamespaces: 1000, apparmorRestrict: '1', probe: failed });
    assert.match(check.detail, /^AppArmor restricts unprivileged user namespaces/);
    assert.match(
      check.fix ?? '',
      /AppArmor profile.*mmdebstrap.*kernel.apparmor_restrict_unprivileged_userns=0/,
    );
  });

  test('fails for another reason: the probe output, no guessed fix', () => {
    const check = checkUserns({
      unprivilegedClone: '1',
      maxUserNamespaces: 1000,
      apparmorRestrict: '0',
      probe: failed,
    });
    assert.equal(check.status, 'warn');
    assert.equal(check.fix, undefined);
    assert.match(check.detail, /Operation not permitted/);
  });
});

describe('doctor: subordinate ids', () => {
  const good: SubidFacts = {
    user: 'bob',
    uid: 1001,
    subuid: 'alice:100000:65536\nbob:165536:65536\n',
    subgid: 'alice:100000:65536\nbob:165536:65536\n',
    newuidmap: '/usr/bin/newuidmap',
    newgidmap: '/usr/bin/newgidmap',
  };

  test('parseSubids skips comments and malformed lines', () => {
    assert.deepEqual(parseSubids('# x\nbob:1:2\nbad\nc:d:e\n1001:5:6'), [
      { owner: 'bob', start: 1, count: 2 },
      { owner: '1001', start: 5, count: 6 },
    ]);
  });

  test('root needs none', () => {
    const check = checkSubids({ user: 'root', uid: 0 });
    assert.equal(check.status, 'ok');
    assert.match(check.detail, /not needed as root/);
  });

  test('ranges and helpers in place: ok', () => {
    assert.equal(checkSubids(good).status, 'ok');
  });

  test('no range for the user: usermod with a range after every existing one', () => {
    const check = checkSubids({ ...good, user: 'carol', uid: 1002 });
    assert.equal(check.status, 'warn');
    assert.match(
      check.detail,
      /^\/etc\/subuid has no range for carol; \/etc\/subgid has no range for carol: /,
    );
    assert.equal(check.fix, 'sudo usermod --add-subuids 231072-296607 --add-subgids 231072-296607 carol');
  });

  test('files missing: the range starts at 100000', () => {
    const { subuid, subgid, ...rest } = good;
    const check = checkSubids(rest);
    assert.match(
      check.detail,
      /\/etc\/subuid is missing or unreadable; \/etc\/subgid is missing or unreadable/,
    );
    assert.equal(check.fix, 'sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 bob');
  });

  test('a range smaller than 65536', () => {
    const check = checkSubids({ ...good, subuid: 'bob:100000:1000\n' });
    assert.match(check.detail, /^\/etc\/subuid gives bob 1000 ids, fewer than 65536: /);
  });

  test('listed by uid only', () => {
    const check = checkSubids({ ...good, subgid: '1001:100000:65536\n' });
    assert.match(check.detail, /\/etc\/subgid lists bob by uid only \(mmdebstrap looks for the name\)/);
  });

  test('newuidmap/newgidmap missing: apt-get install uidmap', () => {
    const { newuidmap, newgidmap, ...rest } = good;
    const check = checkSubids(rest);
    assert.match(check.detail, /^newuidmap and newgidmap not found: /);
    assert.equal(check.fix, 'sudo apt-get install uidmap');
    const both = checkSubids({ ...rest, subuid: '' });
    assert.match(both.fix ?? '', /^sudo apt-get install uidmap && sudo usermod --add-subuids/);
  });
});

describe('doctor: tools', () => {
  const need: ToolNeed = { name: 'depmod', package: 'kmod', purpose: 'builds images', required: true };

  test('on PATH, outside PATH, missing (required: fail, optional: warn)', () => {
    assert.deepEqual(checkTool(need, { path: '/usr/bin/depmod', onPath: true }), {
      status: 'ok',
      what: 'depmod',
      detail: '/usr/bin/depmod: builds images',
    });
    assert.equal(
      checkTool(need, { path: '/usr/sbin/depmod', onPath: false }).detail,
      "/usr/sbin/depmod (not on this user's PATH): builds images",
    );
    assert.deepEqual(checkTool(need, { onPath: false }), {
      status: 'fail',
      what: 'depmod',
      detail: 'not found: builds images',
      fix: 'sudo apt-get install kmod',
    });
    assert.equal(checkTool({ ...need, required: false }, { onPath: false }).status, 'warn');
  });
});

describe('doctor: cgroups', () => {
  const group = (
    path: string,
    controllers = ['cpu', 'memory', 'pids', 'io'],
    writable = true,
  ): CgroupGroup => ({
    path,
    controllers,
    writable,
  });
  const service = '/user.slice/user-1001.slice/user@1001.service';
  const user = { user: 'bob', uid: 1001 };

  test('none mounted', () => {
    assert.match(checkCgroups({ ...user, version: 'none' }).detail, /^no cgroup hierarchy found/);
  });

  test('v2, own group delegated: ok', () => {
    const check = checkCgroups({
      ...user,
      version: 'v2',
      own: group(`${service}/app.slice/x.scope`),
      userService: group(service),
    });
    assert.equal(check.status, 'ok');
    assert.match(check.detail, /^v2; .*x\.scope is writable by bob and offers memory, cpu, pids$/);
  });

  test('v2 as root with a read-only group', () => {
    const check = checkCgroups({ user: 'root', uid: 0, version: 'v2', own: group('/', ['memory'], false) });
    assert.equal(check.status, 'warn');
    assert.match(check.detail, /^v2; \/ is not writable/);
  });

  test('v2 as root without a controller', () => {
    const check = checkCgroups({ user: 'root', uid: 0, version: 'v2', own: group('/', ['memory', 'pids']) });
    assert.match(check.detail, /^v2; \/ does not offer cpu/);
  });

  test('v2 without user@UID.service (su, runuser, containers): enable-linger', () => {
    const check = checkCgroups({
      ...user,
      version: 'v2',
      own: group('/user.slice/user-1001.slice/session-3.scope', [], false),
    });
    assert.equal(check.status, 'warn');
    assert.match(check.detail, /^v2, but bob has no user@1001.service group/);
    assert.match(
      check.fix ?? '',
      /^sudo loginctl enable-linger bob, then run vmkit under systemd-run --user --scope -p Delegate=yes/,
    );
  });

  test('v2, user@UID.service delegates memory and pids but not cpu: the systemd drop-in', () => {
    const facts: CgroupFacts = { ...user, version: 'v2', userService: group(service, ['memory', 'pids']) };
    const check = checkCgroups(facts);
    assert.match(check.detail, /^v2; \/user.slice\/user-1001.slice\/user@1001.service delegates no cpu: /);
    assert.match(
      check.fix ?? '',
      /Delegate=cpu cpuset io memory pids.*user@.service.d\/delegate.conf.*daemon-reload/,
    );
  });

  test('v2, user@UID.service not writable', () => {
    const check = checkCgroups({ ...user, version: 'v2', userService: group(service, undefined, false) });
    assert.match(check.detail, /is not writable by bob/);
    assert.match(check.fix ?? '', /Delegate=/);
  });

  test('v2, delegated subtree fine but vmkit runs outside it (an ssh session scope): systemd-run', () => {
    const check = checkCgroups({
      ...user,
      version: 'v2',
      own: group('/user.slice/user-1001.slice/session-3.scope', [], false),
      userService: group(service),
    });
    assert.match(
      check.detail,
      /is delegated, but vmkit runs in \/user.slice\/user-1001.slice\/session-3.scope, outside it/,
    );
    assert.equal(check.fix, 'run vmkit under systemd-run --user --scope -p Delegate=yes');
  });

  test('v1: writable everywhere is ok; a user cannot (root gets another fix)', () => {
    const all = { memory: true, cpu: true, pids: true };
    assert.equal(checkCgroups({ ...user, version: 'v1', v1Writable: all }).status, 'ok');
    const check = checkCgroups({
      ...user,
      version: 'v1',
      v1Writable: { memory: false, cpu: false, pids: true },
    });
    assert.equal(check.status, 'warn');
    assert.match(check.detail, /^v1; bob cannot make groups in the memory, cpu hierarchies/);
    assert.match(check.fix ?? '', /^run the fleet as root/);
    assert.match(
      checkCgroups({ user: 'root', uid: 0, version: 'v1', v1Writable: {} }).fix ?? '',
      /^mount the cgroup v1/,
    );
  });

  test('parseProcCgroup: v1 controllers and the v2 line', () => {
    const groups = parseProcCgroup('4:memory:/a\n1:cpu,cpuacct:/b\n0::/user.slice/x\n');
    assert.equal(groups.get('memory'), '/a');
    assert.equal(groups.get('cpu'), '/b');
    assert.equal(groups.get('cpuacct'), '/b');
    assert.equal(groups.get(''), '/user.slice/x');
  });
});

describe('doctor: output and the probe layer', () => {
  test('formatCheck keeps the ok/FAIL column and puts the fix under the detail', () => {
    assert.equal(formatCheck({ status: 'ok', what: 'qemu', detail: 'x' }), 'ok   qemu            x\n');
    assert.equal(
      formatCheck({ status: 'warn', what: 'cgroups', detail: 'd', fix: 'f' }),
      `warn cgroups         d\n${' '.repeat(21)}fix: f\n`,
    );
    assert.match(formatCheck({ status: 'fail', what: 'images', detail: 'none' }), /^FAIL images/);
  });

  test('defaultLookup finds a tool in /usr/sbin when PATH lacks it', async (t) => {
    if (!existsSync('/usr/sbin/depmod')) return t.skip('no /usr/sbin/depmod here');
    const saved = process.env.PATH;
    process.env.PATH = '/usr/local/bin:/usr/bin:/bin';
    try {
      assert.deepEqual(await defaultLookup('depmod'), { path: '/usr/sbin/depmod', onPath: false });
      assert.deepEqual(await defaultLookup('vmkit-no-such-tool'), { onPath: false });
    } finally {
      process.env.PATH = saved;
    }
  });

  test('the user-namespace probe without unshare says so', async () => {
    const facts = await readUsernsFacts(async () => ({ onPath: false }));
    assert.deepEqual(facts.probe, { ok: false, detail: 'unshare not found (apt-get install util-linux)' });
  });

  test('this machine: the cgroup version matches /sys/fs/cgroup', async () => {
    const facts = await readCgroupFacts();
    const expected = existsSync('/sys/fs/cgroup/cgroup.controllers')
      ? 'v2'
      : existsSync('/sys/fs/cgroup/memory')
        ? 'v1'
        : 'none';
    assert.equal(facts.version, expected);
  });
});

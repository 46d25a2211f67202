import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  chooseAccel,
  describeVerdict,
  type KvmFacts,
  type KvmProbeResult,
  parseAccel,
  probeKvm,
} from '../../src/backends/accel.js';
import { groupEntry, type KvmHost, parseCpuFlags } from '../../src/backends/accel-host.js';
import { runAccelProbe } from '../../src/backends/qemu/accel-probe.js';
import { ConfigError } from '../../src/errors.js';
import { Runtime } from '../../src/runtime/runtime.js';
import { which } from '../../src/util/which.js';

/** A real KVM host with a user in the kvm group; each test changes what it is about. */
const working: KvmFacts = {
  device: 'ok',
  deviceGroup: 'kvm',
  deviceMode: 0o660,
  user: 'alice',
  listedInDeviceGroup: true,
  cpuFlags: new Set(['fpu', 'vmx', 'sse2']),
  modules: new Set(['kvm', 'kvm_intel']),
};
const probeOk: KvmProbeResult = { ok: true, detail: 'QEMU ran a test guest under KVM in 42 ms' };

/** A host from facts and a probe result, counting how often the probe runs. */
function fakeHost(facts: Partial<KvmFacts>, probe: KvmProbeResult = probeOk) {
  const host = {
    probes: 0,
    factReads: 0,
    facts: async () => {
      host.factReads++;
      return { ...working, ...facts };
    },
    probe: async () => {
      host.probes++;
      return probe;
    },
  } satisfies KvmHost & { probes: number; factReads: number };
  return host;
}

describe('parseAccel', () => {
  for (const value of ['auto', 'kvm', 'tcg'] as const) {
    test(`accepts ${value}`, () => assert.equal(parseAccel(value), value));
  }
  for (const value of ['', 'KVM', 'Tcg', ' kvm', 'kvm ', 'hvf', 'xen', 'kvm,tcg', 'auto\n']) {
    test(`rejects ${JSON.stringify(value)} with ConfigError`, () => {
      assert.throws(
        () => parseAccel(value),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
          assert.ok(error.message.includes(JSON.stringify(value)), error.message);
          assert.match(error.message, /auto, kvm or tcg/);
          return true;
        },
      );
    });
  }
});

describe('probeKvm: every branch, from injected facts', () => {
  test('no /dev/kvm, CPU without vmx/svm: firmware or nested virtualisation is the fix; no probe', async () => {
    const host = fakeHost({ device: 'missing', cpuFlags: new Set(['fpu']), modules: new Set() });
    const verdict = await probeKvm(host);
    assert.equal(verdict.usable, false);
    assert.equal(verdict.branch, 'no-device');
    assert.equal(verdict.reason, '/dev/kvm does not exist and the CPU shows no vmx/svm flag');
    assert.match(verdict.fix ?? '', /VT-x\/AMD-V in the firmware.*nested virtualisation/);
    assert.equal(host.probes, 0);
  });

  test('no /dev/kvm on an AMD CPU with svm: load kvm_amd (or pass the device into the container)', async () => {
    const verdict = await probeKvm(
      fakeHost({ device: 'missing', cpuFlags: new Set(['svm']), modules: new Set() }),
    );
    assert.equal(verdict.branch, 'no-device');
    assert.equal(verdict.reason, '/dev/kvm does not exist, though the CPU has svm');
    assert.equal(verdict.fix, 'sudo modprobe kvm_amd; in a container, pass --device /dev/kvm');
  });

  test('/dev/kvm owned by group kvm (0660), user not in it: usermod is the fix', async () => {
    const host = fakeHost({ device: 'denied', listedInDeviceGroup: false });
    const verdict = await probeKvm(host);
    assert.equal(verdict.branch, 'no-permission');
    assert.equal(verdict.usable, false);
    assert.equal(verdict.reason, '/dev/kvm (group kvm mode 0660) is not readable and writable by user alice');
    assert.equal(verdict.fix, 'sudo usermod -aG kvm alice, then log out and in again');
    assert.equal(host.probes, 0);
  });

  test('/dev/kvm denied although /etc/group lists the user: a new login is the fix', async () => {
    const verdict = await probeKvm(fakeHost({ device: 'denied', listedInDeviceGroup: true }));
    assert.equal(verdict.branch, 'no-permission');
    assert.match(verdict.fix ?? '', /alice is in group kvm but this session is not: log out and in again/);
  });

  test('/dev/kvm root:root 0600 (GitHub runners, this host): the udev rule is the fix', async () => {
    const verdict = await probeKvm(
      fakeHost({ device: 'denied', deviceGroup: 'root', deviceMode: 0o600, listedInDeviceGroup: false }),
    );
    assert.equal(verdict.branch, 'no-permission');
    assert.equal(
      verdict.reason,
      '/dev/kvm (group root mode 0600) is not readable and writable by user alice',
    );
    assert.match(
      verdict.fix ?? '',
      /KERNEL=="kvm", GROUP="kvm", MODE="0660".*udevadm trigger --name-match=kvm/,
    );
    assert.match(verdict.fix ?? '', /usermod -aG kvm alice/);
    const rootGroup = await probeKvm(fakeHost({ device: 'denied', deviceGroup: 'root', deviceMode: 0o660 }));
    assert.match(
      rootGroup.fix ?? '',
      /^give \/dev\/kvm to group kvm with a udev rule/,
      'never: add the user to group root',
    );
  });

  test('nested PVM (kvm_pvm loaded, no vmx/svm): never usable, whatever the permission, no probe', async () => {
    for (const device of ['ok', 'denied'] as const) {
      const host = fakeHost({
        device,
        cpuFlags: new Set(['fpu', 'hypervisor']),
        modules: new Set(['kvm', 'kvm_pvm']),
      });
      const verdict = await probeKvm(host);
      assert.equal(verdict.usable, false);
      assert.equal(verdict.branch, 'nested-pvm', `with /dev/kvm ${device}`);
      assert.equal(
        verdict.reason,
        '/dev/kvm is a nested PVM hypervisor (kvm_pvm module loaded, no vmx/svm CPU flag): stock guest kernels hang under it',
      );
      assert.match(verdict.fix ?? '', /^for KVM, use a machine or cloud instance type that exposes vmx\/svm/);
      assert.equal(host.probes, 0, 'a probe would pass here: its real-mode guest runs under PVM');
    }
  });

  test('/dev/kvm without vmx/svm and without kvm_pvm: not usable, no probe', async () => {
    const host = fakeHost({ cpuFlags: new Set(['fpu']), modules: new Set(['kvm']) });
    const verdict = await probeKvm(host);
    assert.equal(verdict.branch, 'no-hardware-virt');
    assert.match(verdict.reason, /no vmx\/svm flag/);
    assert.equal(host.probes, 0);
  });

  test('probe fails (QEMU exits or times out): not usable, and the reason carries what the probe said', async () => {
    const detail = 'the test guest did not finish within 10000 ms';
    const verdict = await probeKvm(fakeHost({}, { ok: false, detail }));
    assert.equal(verdict.usable, false);
    assert.equal(verdict.branch, 'probe-failed');
    assert.equal(
      verdict.reason,
      `/dev/kvm is usable and the CPU has vmx, but QEMU could not run a test guest under KVM: ${detail}`,
    );
    assert.match(verdict.fix ?? '', /VMKIT_ACCEL=tcg/);
  });

  test('working KVM: usable, says what was checked, no fix', async () => {
    const host = fakeHost({});
    const verdict = await probeKvm(host);
    assert.deepEqual(verdict, {
      usable: true,
      branch: 'usable',
      reason: 'KVM works: /dev/kvm is usable, the CPU has vmx, and QEMU ran a test guest under KVM in 42 ms',
    });
    assert.equal(host.probes, 1);
    assert.equal(describeVerdict(verdict), verdict.reason);
  });
});

describe('chooseAccel', () => {
  const choose = (request: Parameters<typeof chooseAccel>[0], host: KvmHost, env: NodeJS.ProcessEnv = {}) =>
    chooseAccel(request, new Runtime(), { host, env });

  test('auto takes KVM where it works', async () => {
    const decision = await choose('auto', fakeHost({}));
    assert.equal(decision.accel, 'kvm');
    assert.match(decision.reason, /^KVM works: /);
  });

  test('auto falls back to TCG with the reason and the fix in the line a person reads', async () => {
    const host = fakeHost({ device: 'denied', deviceGroup: 'root', deviceMode: 0o600 });
    const decision = await choose('auto', host);
    assert.equal(decision.accel, 'tcg');
    assert.match(
      decision.reason,
      /^software emulation, slower than KVM: \/dev\/kvm \(group root mode 0600\)/,
    );
    assert.match(decision.reason, /; fix: give \/dev\/kvm to group kvm with a udev rule/);
  });

  test('tcg is never probed', async () => {
    const host = fakeHost({});
    const decision = await choose('tcg', host);
    assert.deepEqual(decision, { accel: 'tcg', reason: 'accel "tcg" asks for TCG (software emulation)' });
    assert.equal(host.factReads + host.probes, 0);
  });

  test('kvm where KVM cannot be used is a ConfigError with the reason and the fix', async () => {
    const host = fakeHost({ modules: new Set(['kvm_pvm']), cpuFlags: new Set() });
    await assert.rejects(choose('kvm', host), (error: unknown) => {
      assert.ok(error instanceof ConfigError, String(error));
      assert.match(
        error.message,
        /^accel "kvm" asks for KVM, but it cannot be used: \/dev\/kvm is a nested PVM/,
      );
      assert.match(error.message, /; fix: for KVM, use a machine/);
      return true;
    });
  });

  test('kvm where KVM works', async () => {
    const decision = await choose('kvm', fakeHost({}));
    assert.equal(decision.accel, 'kvm');
    assert.match(decision.reason, /^accel "kvm"; KVM works/);
  });

  test('VMKIT_ACCEL replaces auto; an explicit kvm or tcg wins over it', async () => {
    const tcg = await choose('auto', fakeHost({}), { VMKIT_ACCEL: 'tcg' });
    assert.deepEqual(tcg, { accel: 'tcg', reason: 'VMKIT_ACCEL=tcg asks for TCG (software emulation)' });
    await assert.rejects(
      choose('auto', fakeHost({ device: 'missing' }), { VMKIT_ACCEL: 'kvm' }),
      /^ConfigError: VMKIT_ACCEL=kvm asks for KVM/,
    );
    assert.equal((await choose('kvm', fakeHost({}), { VMKIT_ACCEL: 'tcg' })).accel, 'kvm');
    assert.equal((await choose('tcg', fakeHost({}), { VMKIT_ACCEL: 'kvm' })).accel, 'tcg');
    assert.equal((await choose('auto', fakeHost({}), { VMKIT_ACCEL: '' })).accel, 'kvm', 'empty means unset');
  });

  test('a bad VMKIT_ACCEL is a ConfigError naming the variable', async () => {
    await assert.rejects(choose('auto', fakeHost({}), { VMKIT_ACCEL: 'hvf' }), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /unknown VMKIT_ACCEL "hvf" \(use auto, kvm or tcg\)/);
      return true;
    });
  });

  test('the verdict is a fact of the runtime: probed once per runtime, again in a new one', async () => {
    const host = fakeHost({});
    const runtime = new Runtime();
    await chooseAccel('auto', runtime, { host, env: {} });
    await chooseAccel('kvm', runtime, { host, env: {} });
    assert.equal(host.probes, 1);
    await chooseAccel('auto', new Runtime(), { host, env: {} });
    assert.equal(host.probes, 2);
  });
});

describe('the probe layer', () => {
  test('parseCpuFlags reads the first flags line', () => {
    const flags = parseCpuFlags('processor\t: 0\nflags\t\t: fpu vme  vmx\nprocessor\t: 1\nflags\t\t: svm\n');
    assert.deepEqual([...flags], ['fpu', 'vme', 'vmx']);
    assert.equal(parseCpuFlags('').size, 0);
  });

  test('groupEntry finds a group by gid with its members', () => {
    const etc = 'root:x:0:\nkvm:x:993:alice,bob\nusers:x:100:\n';
    assert.deepEqual(groupEntry(etc, 993), { name: 'kvm', members: ['alice', 'bob'] });
    assert.deepEqual(groupEntry(etc, 0), { name: 'root', members: [] });
    assert.equal(groupEntry(etc, 5), undefined);
  });

  test('the probe guest runs: real QEMU under TCG exits with the probe status', async (t) => {
    if (!(await which('qemu-system-x86_64'))) return t.skip('qemu-system-x86_64 is not installed');
    const result = await runAccelProbe({ qemu: 'qemu-system-x86_64', accel: 'tcg', timeoutMs: 30_000 });
    assert.equal(result.ok, true, result.detail);
    assert.match(result.detail, /^QEMU ran a test guest under TCG in \d+ ms$/);
  });

  test('a QEMU that hangs is killed at the bound and reported', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-accel-test-'));
    try {
      const fake = join(dir, 'qemu');
      await writeFile(fake, '#!/bin/sh\nexec sleep 30\n');
      await chmod(fake, 0o755);
      const started = Date.now();
      const result = await runAccelProbe({ qemu: fake, timeoutMs: 300 });
      assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms`);
      assert.deepEqual(result, { ok: false, detail: 'the test guest did not finish within 300 ms' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a QEMU that exits with an error is reported with its status and stderr', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmkit-accel-test-'));
    try {
      const fake = join(dir, 'qemu');
      await writeFile(
        fake,
        '#!/bin/sh\necho "Could not access KVM kernel module: Permission denied" >&2\necho "qemu: failed to initialize kvm" >&2\nexit 1\n',
      );
      await chmod(fake, 0o755);
      const result = await runAccelProbe({ qemu: fake });
      assert.deepEqual(result, {
        ok: false,
        detail:
          'the test guest ended with status 1: Could not access KVM kernel module: Permission denied; qemu: failed to initialize kvm',
      });
      const missing = await runAccelProbe({ qemu: join(dir, 'absent') });
      assert.equal(missing.ok, false);
      assert.match(missing.detail, /^cannot run .*absent: .*ENOENT/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('this machine: a nested PVM host is never usable', async (t) => {
    const verdict = await probeKvm();
    if (verdict.branch !== 'nested-pvm') return t.skip(`this machine: ${verdict.branch}`);
    assert.equal(verdict.usable, false);
  });
});

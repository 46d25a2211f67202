import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { chooseAccel, parseAccel, probeKvm } from '../../src/backends/accel.js';
import { ConfigError } from '../../src/errors.js';

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

/** What this machine offers, looked up independently of accel.ts. */
async function environment() {
  const devKvm = await exists('/dev/kvm');
  const accessible = devKvm
    ? await access('/dev/kvm', constants.R_OK | constants.W_OK).then(
        () => true,
        () => false,
      )
    : false;
  const pvm = await exists('/sys/module/kvm_pvm');
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const hardware = /^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo);
  return { devKvm, accessible, pvm, hardware };
}

describe('parseAccel', () => {
  for (const value of ['auto', 'kvm', 'tcg'] as const) {
    test(`accepts ${value}`, () => {
      assert.equal(parseAccel(value), value);
    });
  }

  for (const value of ['', 'KVM', 'Tcg', ' kvm', 'kvm ', 'hvf', 'xen', 'kvm,tcg', 'auto\n']) {
    test(`rejects ${JSON.stringify(value)} with ConfigError`, () => {
      assert.throws(
        () => parseAccel(value),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
          assert.ok(
            error.message.includes(JSON.stringify(value)),
            `the message does not quote the value: ${error.message}`,
          );
          assert.match(error.message, /auto, kvm or tcg/);
          return true;
        },
      );
    });
  }
});

describe('probeKvm', () => {
  test('reports a non-empty reason consistent with what this machine has', async () => {
    const env = await environment();
    const probe = await probeKvm();
    assert.equal(typeof probe.usable, 'boolean');
    assert.ok(probe.reason.length > 0, 'the reason is empty');
    if (!env.devKvm) {
      assert.equal(probe.usable, false);
      assert.match(probe.reason, /\/dev\/kvm does not exist/);
    } else if (!env.accessible) {
      assert.equal(probe.usable, false);
      assert.match(probe.reason, /readable and writable/);
    } else if (env.pvm) {
      assert.equal(probe.usable, false);
      assert.match(probe.reason, /kvm_pvm/);
    } else if (!env.hardware) {
      assert.equal(probe.usable, false);
      assert.match(probe.reason, /vmx\/svm/);
    } else {
      assert.equal(probe.usable, true);
      assert.match(probe.reason, /usable.*(vmx|svm)/);
    }
  });

  test('a nested PVM host (kvm_pvm loaded) is never reported usable', async (t) => {
    if (!(await exists('/sys/module/kvm_pvm'))) {
      t.skip('kvm_pvm is not loaded on this machine');
      return;
    }
    const probe = await probeKvm();
    assert.equal(probe.usable, false, `probeKvm says usable: ${probe.reason}`);
    assert.match(probe.reason, /kvm_pvm|vmx\/svm|\/dev\/kvm/);
  });
});

describe('chooseAccel', () => {
  test('tcg gives tcg with a reason', async () => {
    const decision = await chooseAccel('tcg');
    assert.deepEqual(decision.accel, 'tcg');
    assert.match(decision.reason, /TCG was requested/);
  });

  test('auto gives KVM exactly when probeKvm says it is usable, and says why', async () => {
    const probe = await probeKvm();
    for (const decision of [await chooseAccel('auto'), await chooseAccel()]) {
      assert.equal(decision.accel, probe.usable ? 'kvm' : 'tcg');
      assert.ok(decision.reason.length > 0, 'the reason is empty');
      assert.ok(
        decision.reason.includes(probe.reason),
        `"${decision.reason}" does not explain "${probe.reason}"`,
      );
      if (!probe.usable) assert.match(decision.reason, /TCG/);
    }
  });

  test('kvm is refused with ConfigError where KVM cannot be used, and granted where it can', async () => {
    const probe = await probeKvm();
    if (probe.usable) {
      const decision = await chooseAccel('kvm');
      assert.equal(decision.accel, 'kvm');
      assert.ok(
        decision.reason.includes(probe.reason),
        `"${decision.reason}" does not explain "${probe.reason}"`,
      );
    } else {
      await assert.rejects(chooseAccel('kvm'), (error: unknown) => {
        assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
        assert.ok(error.message.includes(probe.reason), error.message);
        return true;
      });
    }
  });
});

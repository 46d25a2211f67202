import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { detachedVmms } from '../../src/backends/index.js';
import {
  type Backend,
  backendNamed,
  type Capability,
  CapabilityError,
  type Machine,
  mockBackend,
  requireCapability,
  startMachine,
} from '../../src/index.js';
import { Runtime } from '../../src/runtime/runtime.js';

/**
 * One test per capability: a backend without it (the mock) gets a CapabilityError that names the
 * backend and the capability, from the code path that needs it where one exists today.
 */
const runtime = new Runtime();
const backend = mockBackend({ script: [{ command: 'true' }] });
let machine: Machine;

before(async () => {
  machine = await startMachine({ name: 'caps', backend, runtime, networks: [], commandTimeoutMs: 5_000 });
});
after(async () => {
  await machine.close();
  await runtime.close();
});

/** Asserts a CapabilityError naming the mock backend and `capability`. */
function namesCapability(capability: string) {
  return (error: unknown) => {
    assert.ok(error instanceof CapabilityError, `expected a CapabilityError, got ${error}`);
    assert.equal(error.backend, 'mock');
    assert.equal(error.capability.split(' ')[0], capability);
    assert.match(error.message, new RegExp(`^the mock backend does not support ${capability}\\b`));
    return true;
  };
}

describe('capabilities the mock backend lacks fail with a CapabilityError naming them', () => {
  test('every capability is covered here', () => {
    const covered: Capability[] = [
      'agentTransport',
      'network',
      'snapshot',
      'cowFork',
      'accels',
      'display',
      'consoleInput',
      'hostNetwork',
      'detached',
      'diskHotplug',
    ];
    assert.deepEqual([...covered].sort(), Object.keys(backend.capabilities).sort());
  });

  test('snapshot: Machine.snapshot()', async () => {
    await assert.rejects(machine.snapshot('caps'), namesCapability('snapshot'));
  });

  test('diskHotplug: Machine.attachDisk()', async () => {
    await assert.rejects(
      machine.attachDisk({ path: '/dev/null', format: 'raw', serial: 'late' }),
      namesCapability('diskHotplug'),
    );
  });

  test('cowFork: declared false (restores check snapshot first, which the mock lacks too)', () => {
    assert.throws(() => requireCapability(backend, 'cowFork'), namesCapability('cowFork'));
  });

  test('accels: a machine that asks for KVM', async () => {
    await assert.rejects(
      startMachine({ name: 'kvm', backend, runtime, accel: 'kvm' }),
      namesCapability('accels'),
    );
  });

  test('display: a machine started with display: true, and screenshot() on one without', async () => {
    await assert.rejects(
      startMachine({ name: 'screen', backend, runtime, display: true }),
      namesCapability('display'),
    );
    await assert.rejects(machine.screenshot('/tmp/never.png'), namesCapability('display'));
  });

  test('consoleInput: sendConsole()', () => {
    assert.throws(() => machine.sendConsole('root\n'), namesCapability('consoleInput'));
  });

  test('hostNetwork: forwardPort(), internet and hostServices', async () => {
    await assert.rejects(machine.forwardPort({ guestPort: 80 }), namesCapability('hostNetwork'));
    await assert.rejects(
      startMachine({ name: 'online', backend, runtime, internet: true }),
      namesCapability('hostNetwork'),
    );
    await assert.rejects(
      startMachine({ name: 'services', backend, runtime, hostServices: { api: 8080 } }),
      namesCapability('hostNetwork'),
    );
  });

  test('detached: the VMMs that outlive vmkit (fleet instances, project VMs)', () => {
    assert.throws(() => detachedVmms(backend, 'project VMs'), namesCapability('detached'));
  });

  test('agentTransport and network: the mock has one value of each, not the other', () => {
    // Nothing asks for vsock or TAP yet (no backend has them); the check is what a caller would get.
    assert.throws(
      () => requireCapability(backend, 'agentTransport', 'vsock'),
      namesCapability('agentTransport'),
    );
    assert.throws(() => requireCapability(backend, 'network', 'tap'), namesCapability('network'));
  });

  test('a QMP monitor: machine.qmp and sendMonitorCommand()', async () => {
    assert.throws(() => machine.qmp, CapabilityError);
    await assert.rejects(
      machine.sendMonitorCommand('info status'),
      /mock backend does not support a QMP monitor/,
    );
  });

  test('the machine still answers its script after every refusal', async () => {
    assert.equal(await machine.succeed('true'), '');
  });

  test('the mock is registered by name, with an empty script', () => {
    const named: Backend = backendNamed('mock');
    assert.equal(named.name, 'mock');
    assert.deepEqual(named.capabilities, backend.capabilities);
  });
});

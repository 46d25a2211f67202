// The setup snapshot of a suite is reused until what its guest state depends on changes: the
// fingerprint that goes into its key (the machine configuration, image and QEMU version are in the
// snapshot's identity, see snapshot-ids.test.ts).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestDefinition } from '../../src/driver/definition.js';
import { planLan } from '../../src/driver/lan.js';
import { setupFingerprint } from '../../src/driver/suite-snapshots.js';

const tests = { 'one test': async () => {} };

function suite(machine: Record<string, unknown>): TestDefinition {
  return { name: 'fingerprinted', machines: { box: machine }, tests } as unknown as TestDefinition;
}
const fingerprint = (definition: TestDefinition) =>
  setupFingerprint(definition, planLan(definition.machines));

describe('setup snapshot fingerprint', () => {
  const setup = async (box: { succeed(command: string): Promise<string> }) => {
    await box.succeed('echo one > /root/state');
  };

  test('is the same for an equal definition built anew', () => {
    assert.equal(fingerprint(suite({ setup })), fingerprint(suite({ setup })));
  });

  test("the fingerprint changes with the setup's source and its setupVersion", () => {
    const before = fingerprint(suite({ setup, setupVersion: '1' }));
    const otherSource = async (box: { succeed(command: string): Promise<string> }) => {
      await box.succeed('echo two > /root/state');
    };
    assert.notEqual(fingerprint(suite({ setup: otherSource, setupVersion: '1' })), before);
    assert.notEqual(fingerprint(suite({ setup, setupVersion: '2' })), before);
    assert.notEqual(fingerprint(suite({ setup })), before, 'no setupVersion differs from one');
  });

  test("a change to the tests' bodies alone keeps it", () => {
    const other = { ...suite({ setup }), tests: { 'another test': async () => {} } } as TestDefinition;
    assert.equal(fingerprint(other), fingerprint(suite({ setup })));
  });
});

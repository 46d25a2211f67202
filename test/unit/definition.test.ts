import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { asTestDefinition, defineTest } from '../../src/driver/definition.js';
import { ConfigError } from '../../src/errors.js';

const SOURCE = '/work/tests/net.test.ts';
const USAGE = `${SOURCE} must export default defineTest({ machines: {...}, async test(...) {...} }) (or tests: { name: async (...) => {...} })`;
const body = async () => {};

/**
 * Asserts that asTestDefinition refuses `value` with a ConfigError whose message is exactly
 * `message`, or (given a function) passes its checks.
 */
function refuses(value: unknown, message: string | ((message: string) => void)): void {
  assert.throws(
    () => asTestDefinition(value, SOURCE),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
      assert.equal(error.name, 'ConfigError');
      if (typeof message === 'string') assert.equal(error.message, message);
      else message(error.message);
      assert.ok(error.message.includes(SOURCE), 'the message names the source file');
      return true;
    },
  );
}

const NAME_RULE = "use 1 to 32 lower-case letters, digits, '-' or '_', starting with a letter or digit";

describe('asTestDefinition refuses', () => {
  for (const [label, value] of [
    ['undefined', undefined],
    ['null', null],
    ['a string', 'defineTest'],
    ['a number', 42],
    ['a function', () => {}],
  ] as const) {
    test(`a default export that is not an object: ${label}`, () => refuses(value, USAGE));
  }

  test('both test and tests', () =>
    refuses(
      { machines: { a: {} }, test: body, tests: { one: body } },
      `${USAGE}: give exactly one of test and tests`,
    ));

  test('neither test nor tests', () =>
    refuses({ machines: { a: {} } }, `${USAGE}: give exactly one of test and tests`));

  test('a test that is not a function counts as no test', () =>
    refuses({ machines: { a: {} }, test: 'run it' }, `${USAGE}: give exactly one of test and tests`));

  test('an empty tests', () => refuses({ machines: { a: {} }, tests: {} }, `${SOURCE}: tests is empty`));

  test('a test in tests that is not a function, named', () =>
    refuses(
      { machines: { a: {} }, tests: { first: body, 'second one': 'oops' } },
      `${SOURCE}: test "second one" is not a function`,
    ));

  test('no machines key', () => refuses({ test: body }, `${SOURCE}: the test declares no machines`));

  test('machines that is not an object', () =>
    refuses({ machines: 'a', test: body }, `${SOURCE}: the test declares no machines`));

  test('an empty machines', () =>
    refuses({ machines: {}, test: body }, `${SOURCE}: the test declares no machines`));

  for (const reserved of ['log', 'subtest', 'vlan']) {
    test(`the reserved machine name ${reserved}`, () =>
      refuses(
        { machines: { a: {}, [reserved]: {} }, test: body },
        `${SOURCE}: "${reserved}" is reserved and cannot name a machine`,
      ));
  }

  for (const name of ['Server', '-a', 'a b', 'a'.repeat(33), 'a.b']) {
    // The wording around the name may change (validateName moves to a schema); what it must
    // say does not: the source, that the machine name is invalid, the name, and the rule.
    test(`the invalid machine name ${JSON.stringify(name)}, naming it and the rule`, () =>
      refuses({ machines: { [name]: {} }, test: body }, (message) => {
        assert.ok(message.startsWith(`${SOURCE}: invalid machine name`), message);
        assert.ok(message.includes(JSON.stringify(name)), `the name is in: ${message}`);
        assert.ok(message.includes(NAME_RULE), `the rule is in: ${message}`);
      }));
  }

  test('an unknown image, naming the machine and the known images', () =>
    refuses(
      { machines: { a: {}, b: { image: 'fedora' } }, test: body },
      `${SOURCE}: machine b asks for unknown image "fedora" (known images: tiny, debian)`,
    ));
});

describe('asTestDefinition accepts', () => {
  test('a definition with test, returned as is', () => {
    const definition = defineTest({
      name: 'ping',
      machines: { server: {}, client: { image: 'tiny', vlans: [1, 2] } },
      timeoutMs: 60_000,
      test: body,
    });
    assert.equal(asTestDefinition(definition, SOURCE), definition);
  });

  test('a definition with tests, returned as is', () => {
    const definition = defineTest({
      machines: { a: { setup: async () => {}, setupVersion: '2' }, 'b-2_x': {} },
      testTimeoutMs: 5000,
      tests: { first: body, second: body },
    });
    assert.equal(asTestDefinition(definition, SOURCE), definition);
  });

  test('a machine name of 32 characters and one of 1 character', () => {
    const definition = { machines: { ['a'.repeat(32)]: {}, z: {} }, test: body };
    assert.equal(asTestDefinition(definition, SOURCE), definition);
  });

  test('a machine given a built image object rather than a name', () => {
    const image = {
      name: 'custom',
      key: 'k',
      dir: '/d',
      kernel: '/d/k',
      initrd: '/d/i',
      cmdline: '',
      kernelRelease: '6',
    };
    const definition = { machines: { a: { image } }, test: body };
    assert.equal(asTestDefinition(definition, SOURCE), definition);
  });

  test('an image object that is not a built image is refused', () => {
    assert.throws(
      () => asTestDefinition({ machines: { a: { image: { name: 'custom' } } }, test: body }, SOURCE),
      /machine a: image: must be an image name, a recipe like \{ base: "debian" \}, a BootImage from buildImage\(\), or \{ iso \} \/ \{ disk \} \/ \{ kernel \}/,
    );
  });

  test('VLANs out of range, repeated, or a misspelt option are refused with the field named', () => {
    for (const [declaration, message] of [
      [{ vlans: [999] }, /machine a: vlans\[0\]: must be a whole number from 1 to 254 \(got 999\)/],
      [{ vlans: [2, 2] }, /machine a: vlans: VLANs must be distinct/],
      [{ memoryMib: 512 }, /machine a: unknown option "memoryMib"/],
      [null, /machine a: expected an options object \(got null\)/],
    ] as const) {
      assert.throws(() => asTestDefinition({ machines: { a: declaration }, test: body }, SOURCE), message);
    }
  });
});

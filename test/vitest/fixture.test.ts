// Run by test/vm/fixtures.test.ts: a vitest file using useMachines, with one test failing on purpose.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { useMachines } from '../../src/index.js';

// vitest gives hooks 10 s by default: a boot under emulation needs more.
const vms = useMachines(
  { before: (fn) => beforeAll(fn, 300_000), after: (fn) => afterAll(fn, 60_000) },
  { vitestbox: {} },
);

test('the machine answers', async () => {
  console.log(`fixture pid ${vms.vitestbox.pid}`);
  expect(await vms.vitestbox.succeed('hostname')).toBe('vitestbox\n');
});

test('a failing test still gets its machine closed', async () => {
  expect(await vms.vitestbox.succeed('echo nope')).toBe('yes\n');
});

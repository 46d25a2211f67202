// Three machines on one VLAN: cut one off, the other two keep talking; heal, and all talk again.
// Run it with `npx vmkit run examples/partition.ts`.
import { defineTest } from 'vmkit';

export default defineTest({
  name: 'partition',
  machines: { a: {}, b: {}, c: {} },
  async test({ a, b, c, vlan, subtest }) {
    const reaches = (from: typeof a, to: string) =>
      from.execute(`ping -c 1 -W 1 ${to}`).then((r) => r.exitCode === 0);

    await subtest('everyone reaches everyone', async () => {
      for (const [from, to] of [
        [a, 'b'],
        [b, 'c'],
        [c, 'a'],
      ] as const) {
        await from.waitUntilSucceeds(`ping -c 1 -W 1 ${to}`, { timeoutMs: 20_000 });
      }
    });

    await subtest('c is cut off; a and b keep talking', async () => {
      vlan(1).partition([[a, b], [c]]);
      if (!(await reaches(a, 'b'))) throw new Error('a lost b inside the majority');
      if (await reaches(a, 'c')) throw new Error('a still reaches c across the partition');
      if (await reaches(c, 'b')) throw new Error('c still reaches b across the partition');
    });

    await subtest('healed, everyone talks again', async () => {
      vlan(1).heal();
      await c.waitUntilSucceeds('ping -c 1 -W 1 a', { timeoutMs: 20_000 });
      await a.waitUntilSucceeds('ping -c 1 -W 1 c', { timeoutMs: 20_000 });
    });
  },
});

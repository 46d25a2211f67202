import type { Machine } from '../machine/machine.js';
import type { VirtualSwitch } from '../network/switch.js';
import type { RunLog } from '../util/log.js';

/** Everything a run started, so that it can all be stopped whatever happens. */
export class Resources {
  readonly machines = new Set<Machine>();
  readonly switches = new Set<VirtualSwitch>();
  readonly pending = new Set<Promise<unknown>>();
  readonly aborter = new AbortController();

  track<T>(work: Promise<T>): Promise<T> {
    this.pending.add(work);
    work.then(
      () => this.pending.delete(work),
      () => this.pending.delete(work),
    );
    return work;
  }

  async release(machines: Iterable<Machine>, switches: Iterable<VirtualSwitch>): Promise<void> {
    const ms = [...machines];
    const ss = [...switches];
    for (const machine of ms) this.machines.delete(machine);
    for (const sw of ss) this.switches.delete(sw);
    await Promise.allSettled(ms.map((machine) => machine.close()));
    await Promise.allSettled(ss.map((sw) => sw.close()));
  }

  async closeAll(): Promise<void> {
    this.aborter.abort();
    await Promise.allSettled([...this.pending]);
    await this.release([...this.machines], [...this.switches]);
  }
}

/** Starts machines in parallel; if any fails, waits for the others and rethrows the first error. */
export async function startAll(
  names: string[],
  start: (name: string) => Promise<Machine>,
): Promise<Record<string, Machine>> {
  const results = await Promise.allSettled(names.map(start));
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failed) throw failed.reason;
  const machines: Record<string, Machine> = {};
  names.forEach((name, index) => {
    const result = results[index];
    if (result?.status === 'fulfilled') machines[name] = result.value;
  });
  return machines;
}

export function adopt(
  machine: Machine,
  resources: Resources,
  log: RunLog,
  options: { console?: boolean },
): Machine {
  resources.machines.add(machine);
  if (options.console) machine.console.on('line', (line) => log.line(`${machine.name}:con`, line));
  return machine;
}

export function withoutDriverFields<T extends { vlans?: unknown; setup?: unknown; setupVersion?: unknown }>(
  declaration: T,
) {
  const { vlans: _vlans, setup: _setup, setupVersion: _version, ...options } = declaration;
  return options;
}

import { ConfigError } from '../errors.js';
import type { Machine } from '../machine/machine.js';

/**
 * A machine declared with `start: false`: it stands in the test's context under its name and
 * comes up (on the test's VLANs, with its setup) when the test calls `start()`. Until then every
 * other use fails with a ConfigError saying so; afterwards it is the machine itself.
 */
export function lateMachine(name: string, boot: () => Promise<Machine>): Machine {
  let machine: Machine | undefined;
  let starting: Promise<Machine> | undefined;
  const start = async () => {
    starting ??= boot().then((started) => {
      machine = started;
      return started;
    });
    await starting;
  };
  const notStarted = (property: string) => () => {
    throw new ConfigError(
      `machine ${name} is declared with start: false and is not started yet: call ${name}.start() before ${name}.${property}`,
    );
  };
  return new Proxy({} as Machine, {
    get(_target, property) {
      if (property === 'start') return start;
      if (machine) {
        const value = Reflect.get(machine, property, machine);
        return typeof value === 'function' ? value.bind(machine) : value;
      }
      if (property === 'name') return name;
      if (property === 'isRunning') return false;
      if (typeof property === 'symbol' || property === 'then') return undefined;
      return notStarted(property);
    },
  });
}

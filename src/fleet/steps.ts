/** Times the steps of one operation, for its log line and audit detail ("RAM 80 ms, QEMU up 95 ms"). */
export interface StepTimer {
  step(name: string): void;
  /** The steps so far, in order, with their milliseconds. */
  readonly steps: Array<[string, number]>;
  summary(): string;
}

/**
 * Tests only: `VMKIT_TEST_KILL_AT=<operation>:<step>` makes the process SIGKILL itself the moment
 * that operation reaches that step (its name, or the start of it), like `kill -9` from an operator
 * but at a boundary the test names. The step names of stepTimer are the kill points, plus `begun`
 * (the intent recorded, no step done yet).
 */
export const KILL_AT_ENV = 'VMKIT_TEST_KILL_AT';

export function killPoint(operation: string, step: string): void {
  const at = process.env[KILL_AT_ENV];
  if (!at) return;
  const colon = at.indexOf(':');
  if (at.slice(0, colon) === operation && step.startsWith(at.slice(colon + 1))) {
    process.kill(process.pid, 'SIGKILL');
  }
}

/** `operation` names the kill points of its steps (see killPoint). */
export function stepTimer(
  log: ((line: string) => void) | undefined,
  what: string,
  operation?: string,
): StepTimer {
  let last = performance.now();
  const steps: Array<[string, number]> = [];
  return {
    steps,
    step(name) {
      const now = performance.now();
      steps.push([name, Math.round(now - last)]);
      last = now;
      log?.(`${what}: ${name} in ${steps.at(-1)?.[1]} ms`);
      if (operation) killPoint(operation, name);
    },
    summary: () => steps.map(([name, ms]) => `${name} ${ms} ms`).join(', '),
  };
}

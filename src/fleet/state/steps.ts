import { killPoint } from '../../util/kill-point.js';

export { KILL_AT_ENV, killPoint } from '../../util/kill-point.js';

/** Times the steps of one operation, for its log line and audit detail ("RAM 80 ms, QEMU up 95 ms"). */
export interface StepTimer {
  step(name: string): void;
  /** The steps so far, in order, with their milliseconds. */
  readonly steps: Array<[string, number]>;
  summary(): string;
}

/** `operation` names the kill points of its steps (see killPoint): the step names, plus `begun` (Fleet.operate). */
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

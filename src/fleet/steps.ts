/** Times the steps of one operation, for its log line and audit detail ("RAM 80 ms, QEMU up 95 ms"). */
export interface StepTimer {
  step(name: string): void;
  /** The steps so far, in order, with their milliseconds. */
  readonly steps: Array<[string, number]>;
  summary(): string;
}

export function stepTimer(log: ((line: string) => void) | undefined, what: string): StepTimer {
  let last = performance.now();
  const steps: Array<[string, number]> = [];
  return {
    steps,
    step(name) {
      const now = performance.now();
      steps.push([name, Math.round(now - last)]);
      last = now;
      log?.(`${what}: ${name} in ${steps.at(-1)?.[1]} ms`);
    },
    summary: () => steps.map(([name, ms]) => `${name} ${ms} ms`).join(', '),
  };
}

import { TestRunError } from '../errors.js';
import type { Machine } from '../machine/machine.js';

export interface PollingConditionOptions {
  /** How often at most the condition is checked (default 2000 ms, as in the NixOS driver). */
  intervalMs?: number;
  /** Names the condition in the failure. */
  description?: string;
}

/** A running polling condition; `stop()` (or leaving a `using` block) ends it. */
export interface PollingCondition extends Disposable {
  stop(): void;
  /** How many times it was checked. */
  readonly checks: number;
}

interface Condition {
  check: () => unknown;
  intervalMs: number;
  description: string;
  lastChecked: number;
  checks: number;
  active: boolean;
}

/**
 * A test's polling conditions: each active one is checked before a machine command runs, at
 * most once per interval, as in the NixOS driver. A condition that throws (or returns false)
 * fails that command, and so the test, naming the condition. Commands the checks run
 * themselves are not gated.
 */
export class PollingConditions {
  private readonly conditions: Condition[] = [];
  /** Set while checks run: commands they run themselves are not gated. */
  private checking = false;
  private readonly detachers: Array<() => void> = [];

  /** Gates every command of `machine`. */
  watch(machine: Machine): void {
    this.detachers.push(
      machine.observeCommands(() => {
        if (this.checking) return undefined; // a command run by a check itself
        const due = this.conditions.filter(
          (condition) =>
            condition.active && performance.now() - condition.lastChecked >= condition.intervalMs,
        );
        if (due.length === 0) return undefined;
        this.checking = true; // before the first check runs a command of its own
        const checked = this.checkAll(due).finally(() => {
          this.checking = false;
        });
        return { before: checked };
      }),
    );
  }

  add(check: () => unknown, options: PollingConditionOptions = {}): PollingCondition {
    const intervalMs = options.intervalMs ?? 2000;
    if (!Number.isInteger(intervalMs) || intervalMs < 0)
      throw new TestRunError(
        `pollingCondition: intervalMs must be a whole number of milliseconds (got ${intervalMs})`,
      );
    const condition: Condition = {
      check,
      intervalMs,
      description: options.description ?? (check.name || 'polling condition'),
      lastChecked: Number.NEGATIVE_INFINITY,
      checks: 0,
      active: true,
    };
    this.conditions.push(condition);
    const stop = () => {
      condition.active = false;
    };
    return {
      stop,
      [Symbol.dispose]: stop,
      get checks() {
        return condition.checks;
      },
    };
  }

  close(): void {
    for (const detach of this.detachers.splice(0)) detach();
    for (const condition of this.conditions) condition.active = false;
  }

  private async checkAll(due: Condition[]): Promise<void> {
    for (const condition of due) {
      condition.lastChecked = performance.now();
      condition.checks++;
      let outcome: unknown;
      try {
        outcome = await condition.check();
      } catch (error) {
        condition.active = false;
        const why = error instanceof Error ? error.message : String(error);
        throw new TestRunError(`polling condition "${condition.description}" failed: ${why}`);
      }
      if (outcome === false) {
        condition.active = false;
        throw new TestRunError(`polling condition "${condition.description}" failed: it returned false`);
      }
    }
  }
}

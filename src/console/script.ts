import { ConfigError, describeValue, TimeoutError, VmkitError } from '../errors.js';
import { keyBytes } from './keys.js';
import type { ExpectMatch, SerialConsole } from './serial.js';

/** One step of a console script: wait for something, then type something (either may be left out). */
export interface ConsoleStep {
  name: string;
  /** Steps of one phase are logged together ("boot loader", "installer", "first boot"). */
  phase?: string;
  expect?: RegExp | string;
  /** Text typed as is; `sendLine` adds Enter; `keys` are pressed in order after the text. */
  send?: string;
  sendLine?: string;
  keys?: string[];
  /** After the expect, wait until the console has been quiet this long (a screen drawn whole). */
  settleMs?: number;
  /** Type `send`/`sendLine` a character at a time, this far apart (for boot loaders and firmware). */
  perCharMs?: number;
  /**
   * What the keys' effect shows. When it has not shown within `untilMs`, the keys are pressed
   * again (three times at most): a guest busy drawing can miss a key. Only for keys that are
   * harmless to press twice.
   */
  until?: RegExp | string;
  /** How long to wait for `until` before pressing the keys again (default 5000). */
  untilMs?: number;
  /** For the expect (default 60000). */
  timeoutMs?: number;
}

/** A console script stopped: names the step and its phase, with the cause and the screen. */
export class ConsoleScriptError extends VmkitError {
  override name = 'ConsoleScriptError';
  constructor(
    readonly step: string,
    readonly phase: string,
    cause: Error,
  ) {
    super(`console script failed at step "${step}" (phase ${phase}): ${cause.message}`);
  }
}

/**
 * Runs expect/send steps on a console in order: an unattended installer, boot loader keystrokes.
 * Logs each phase as it starts and ends; resolves with what each step's expect matched.
 */
export async function runConsoleScript(
  machine: { name: string; console: SerialConsole },
  steps: ConsoleStep[],
  options: { log?: (line: string) => void } = {},
): Promise<Record<string, ExpectMatch>> {
  if (!Array.isArray(steps))
    throw new ConfigError(`runConsoleScript takes a list of steps, not ${describeValue(steps)}`);
  steps.forEach((step, index) => {
    if (typeof step?.name !== 'string' || step.name === '')
      throw new ConfigError(`runConsoleScript: step ${index} needs a name`);
    if (
      step.expect === undefined &&
      step.send === undefined &&
      step.sendLine === undefined &&
      !step.keys?.length
    )
      throw new ConfigError(`runConsoleScript: step "${step.name}" neither expects nor sends anything`);
  });
  const log = options.log ?? (() => {});
  const matches: Record<string, ExpectMatch> = {};
  let phase: string | undefined;
  let phaseStarted = 0;
  for (const step of steps) {
    const stepPhase = step.phase ?? phase ?? 'main';
    if (stepPhase !== phase) {
      if (phase !== undefined)
        log(`${machine.name}: phase ${phase} done in ${Math.round(performance.now() - phaseStarted)} ms`);
      phase = stepPhase;
      phaseStarted = performance.now();
      log(`${machine.name}: phase ${phase}`);
    }
    try {
      await machine.console.recordStep('script', `${stepPhase}: ${step.name}`, async () => {
        if (step.expect !== undefined) {
          matches[step.name] = await machine.console.expect(step.expect, {
            timeoutMs: step.timeoutMs ?? 60_000,
          });
        }
        if (step.settleMs) await machine.console.settle(step.settleMs);
        await sendStep(machine.console, step);
        if (step.until !== undefined) await pressUntil(machine.console, step);
      });
    } catch (error) {
      throw new ConsoleScriptError(step.name, stepPhase, error as Error);
    }
  }
  if (phase !== undefined)
    log(`${machine.name}: phase ${phase} done in ${Math.round(performance.now() - phaseStarted)} ms`);
  return matches;
}

async function sendStep(console: SerialConsole, step: ConsoleStep): Promise<void> {
  const text = step.send ?? (step.sendLine === undefined ? undefined : `${step.sendLine}\r`);
  if (text !== undefined) {
    if (step.perCharMs) await console.type(text, step.perCharMs);
    else console.send(text);
  }
  for (const key of step.keys ?? []) {
    if (step.perCharMs) await console.pressAndWait(keyBytes(key), step.perCharMs);
    else console.sendKey(key);
  }
}

async function pressUntil(console: SerialConsole, step: ConsoleStep): Promise<void> {
  const until = step.until as RegExp | string;
  for (let attempt = 1; ; attempt++) {
    try {
      await console.expect(until, { timeoutMs: step.untilMs ?? 5_000 });
      return;
    } catch (error) {
      if (attempt === 3 || !(error instanceof TimeoutError)) throw error;
      for (const key of step.keys ?? []) console.sendKey(key);
    }
  }
}

import type { BackdoorChannel } from '../agent/backdoor.js';
import type { SerialConsole } from '../console/serial.js';

/** What a readiness strategy may look at while a guest boots. */
export interface ReadinessContext {
  machine: string;
  agent: BackdoorChannel;
  console: SerialConsole;
  timeoutMs: number;
}

/**
 * How vmkit knows a booting guest is up, the way testcontainers has wait strategies: the agent's
 * banner for guests that run vmkit's backdoor; a console prompt or an open port for others.
 */
export interface Readiness {
  /** What is awaited, for logs and timeout errors. */
  readonly describe: string;
  wait(context: ReadinessContext): Promise<void>;
}

/** Ready when the guest agent announces itself on its channel. */
export const agentBanner: Readiness = {
  describe: 'the guest agent banner',
  wait: ({ agent, timeoutMs }) => agent.waitForBanner(timeoutMs),
};

/** Ready when the serial console shows `pattern` (a login prompt, say). */
export function consoleText(pattern: RegExp | string): Readiness {
  return {
    describe: `console text ${pattern}`,
    wait: async ({ console, timeoutMs }) => {
      await console.waitForText(pattern, timeoutMs);
    },
  };
}

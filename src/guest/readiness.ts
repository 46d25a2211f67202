import { connect } from 'node:net';
import type { BackdoorChannel } from '../agent/backdoor.js';
import type { SerialConsole } from '../console/serial.js';
import { TimeoutError } from '../errors.js';
import { sleep } from '../util/time.js';

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

/** Ready as soon as the VMM runs: for guests that a test drives from the first byte on. */
export const vmmRunning: Readiness = {
  describe: 'the VMM running',
  wait: async () => {},
};

/**
 * Ready when an SSH server answers with its banner on the host port forwarded to the guest.
 * (User-mode networking accepts a forwarded connection even when nothing listens in the guest, so
 * an accepted connection alone proves nothing.)
 */
export function sshBanner(hostPort: () => number | undefined): Readiness {
  const describe = 'an SSH banner on the forwarded port';
  return {
    describe,
    wait: async ({ machine, console, timeoutMs }) => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const port = hostPort();
        if (port !== undefined && (await answersSsh(port, Math.min(5_000, deadline - Date.now())))) return;
        await sleep(500);
      }
      const port = hostPort();
      throw new TimeoutError(
        `${describe} of machine ${machine}`,
        timeoutMs,
        port === undefined ? 'no port forwarded yet' : `nothing answered SSH on 127.0.0.1:${port}`,
        console.tail(1500),
      );
    },
  };
}

function answersSsh(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (answer: boolean) => {
      socket.destroy();
      clearTimeout(timer);
      resolve(answer);
    };
    const timer = setTimeout(() => done(false), Math.max(1, timeoutMs));
    socket.once('data', (chunk) => done(chunk.toString('latin1').startsWith('SSH-')));
    socket.once('error', () => done(false));
    socket.once('close', () => done(false));
  });
}

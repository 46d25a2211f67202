import { join } from 'node:path';
import type { RestoreSetup } from '../guest/profiles/index.js';

/** JSON lines between vmkit CLI processes and a VM's agent hub; bytes travel as base64. */
export type HubRequest =
  | { type: 'run'; script: string; timeoutMs: number }
  | { type: 'upload'; hostPath: string; guestPath: string; timeoutMs: number }
  | { type: 'spawn'; script: string }
  | { type: 'stdin'; data: string }
  | { type: 'eof' }
  | { type: 'signal'; signal: string }
  /** Tells a guest just restored who it is (setUpRestoredGuest): answered by a `result`. */
  | { type: 'restored'; profile: string; setup: RestoreSetup; timeoutMs: number }
  /** Lets the agent go to this client until it disconnects (a Machine attaching: vm-machine.ts). */
  | { type: 'lend'; borrower: string; timeoutMs: number };

export type HubReply =
  | { type: 'result'; status: number; timedOut: boolean; stdout: string; stderr: string }
  | { type: 'started'; id: number }
  | { type: 'output'; stream: 'stdout' | 'stderr'; data: string }
  | { type: 'exit'; status: number; timedOut: boolean }
  | { type: 'lent' }
  /** `name`: the error's class, for the ones a client tells apart (AgentLentError). */
  | { type: 'error'; message: string; name?: string };

export const hubSocket = (runDir: string) => join(runDir, 'hub.sock');
export const hubRecordPath = (runDir: string) => join(runDir, 'hub.json');
export const hubLogPath = (runDir: string) => join(runDir, 'hub.log');

/** One step of a console session, for the run's ledger: a wait, a login, a command, ... */
export interface ConsoleStepEvent {
  /** What kind of step: expect, prompt, login, escalate, command, script. */
  step: 'expect' | 'prompt' | 'login' | 'escalate' | 'command' | 'script';
  /** The pattern awaited, the user, the command, the script step. */
  name: string;
  durationMs: number;
  outcome: 'ok' | 'failed' | 'timeout';
  exitCode?: number;
  /** A command's output (stdout and stderr merged on a console). */
  output?: string;
  error?: string;
}

/** What a console shell offers to diagnostics: commands with their status and output. */
export interface ConsoleCommandRunner {
  execute(command: string, options: { timeoutMs?: number }): Promise<{ exitCode: number; stdout: string }>;
}

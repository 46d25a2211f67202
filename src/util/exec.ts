import { spawn } from 'node:child_process';
import { HostToolError, tail } from '../errors.js';
import { registerExitHooks } from './exit-hooks.js';
import { LineSplitter } from './lines.js';
import { installHint } from './tool-packages.js';
import { toolEnv, whichSync } from './which.js';

export interface RunResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs a program (argument vector, no shell) to completion. Rejects with an error that names
 * the command and shows its exit status and output tail. `timeoutMs` bounds the wait.
 */
export function runTool(
  program: string,
  args: string[],
  options: {
    cwd?: string;
    timeoutMs?: number;
    env?: NodeJS.ProcessEnv;
    /** Called with each line the program writes to stderr, as it comes (progress). */
    onStderrLine?: (line: string) => void;
  } = {},
): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    // Found in /usr/sbin too, and children (mmdebstrap's hooks, say) get the same search path.
    const child = spawn(whichSync(program) ?? program, args, {
      cwd: options.cwd,
      env: toolEnv(options.env ?? process.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // The tool (qemu-img, apt-get, mmdebstrap) ends with vmkit's process: at its exit, or at a
    // signal that ends it. A program that handles the signal itself may still await the tool.
    const unregister = registerExitHooks({
      killProcesses: () => [],
      cleanupAtExit: () => (child.kill('SIGKILL') && child.pid ? [child.pid] : []),
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    const lines = new LineSplitter(4096);
    child.stderr.on('data', (chunk: Buffer) => {
      stderr.push(chunk);
      const onLine = options.onStderrLine;
      if (onLine) lines.push(chunk, (line) => onLine(line.toString()));
    });
    const commandLine = [program, ...args].join(' ');
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new HostToolError(`${commandLine} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      unregister();
      if (error.code === 'ENOENT')
        return reject(new HostToolError(`cannot run ${program}: ${installHint(program)}`));
      reject(new HostToolError(`cannot run ${program}: ${error.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      unregister();
      const result = { stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() };
      if (code === 0) return resolve(result);
      const status = signal ? `signal ${signal}` : `status ${code}`;
      reject(
        new HostToolError(
          `${commandLine} failed with ${status}\n${tail(result.stderr || result.stdout, 1500)}`,
        ),
      );
    });
  });
}

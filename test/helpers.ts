import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { backendNamed, type Capability, requireCapability } from '../src/index.js';

export const root = fileURLToPath(new URL('..', import.meta.url));
export const cli = `${root}dist/cli/main.js`;

/** Runs the built vmkit CLI to completion; kills it if it outlives `timeoutMs`. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 240_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runProgram(process.execPath, [cli, ...args], { env, timeoutMs });
}

/**
 * Runs a program to completion with `input` on its stdin (none: left open); `during` may act
 * while it runs, seeing its stderr so far and its pid. Kills it if it outlives `timeoutMs`.
 */
export function runProgram(
  program: string,
  args: string[],
  options: {
    env?: NodeJS.ProcessEnv;
    timeoutMs?: number;
    input?: string;
    /** The folder it runs in (default: the repository). */
    cwd?: string;
    during?: (stderr: () => string, pid: number) => Promise<void>;
  } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { cwd: options.cwd ?? root, env: { ...process.env, ...options.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    // A program that exits before reading its input closes the pipe: not the test's failure.
    child.stdin.on('error', () => {});
    if (options.input !== undefined) child.stdin.end(options.input);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `${program} ${args.join(' ')} did not finish in ${options.timeoutMs ?? 240_000} ms\n${stderr}`,
        ),
      );
    }, options.timeoutMs ?? 240_000);
    options.during?.(() => stderr, child.pid as number).catch(reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Why the backend the tests run on lacks `capability` (a reason to skip), or false when it has
 * it. Tests skip by capability, never by backend name.
 */
export function lacks(capability: Capability, value?: string): string | false {
  try {
    requireCapability(backendNamed(), capability, value);
    return false;
  } catch (error) {
    return (error as Error).message;
  }
}

/** Running, and not a zombie waiting to be reaped. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The living processes below `ancestor` (its children, theirs, ...), by pid. */
export function descendantsOf(ancestor: number): number[] {
  const parents = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] !== 'Z') parents.set(Number(name), Number(fields[1]));
    } catch {} // it ended while the list was read
  }
  const below = (pid: number): number[] =>
    [...parents].filter(([, parent]) => parent === pid).flatMap(([child]) => [child, ...below(child)]);
  return below(ancestor);
}

/** The first line a server sends on 127.0.0.1:`port` (an SSH server's is its banner). */
export function firstLine(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let text = '';
    const timer = setTimeout(() => socket.destroy(new Error(`no line on port ${port} in 30 s`)), 30_000);
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1');
      if (text.includes('\n')) socket.end();
    });
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(text.split('\n')[0]?.trim() ?? '');
    });
  });
}

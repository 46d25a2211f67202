// What the benchmarks share: the machine they measure, option parsing, statistics, the
// environment they report, and cleanup of every machine they start (at the end, on error and on
// SIGINT/SIGTERM/SIGHUP).

import { execFile, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { type ParseArgsConfig, parseArgs, promisify } from 'node:util';
import { type AccelDecision, type BootImage, buildImage, chooseAccel, type Machine, Runtime } from 'vmkit';

/** vmkit's defaults, set explicitly so that they cannot drift between runs or benchmarks. */
export const MEMORY_MIB = 256;
export const CPUS = 1;
export const BOOT_TIMEOUT_MS = 180_000;

export const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

/** The built CLI (`npm run build` first). */
const CLI = new URL('../dist/cli/main.js', import.meta.url).pathname;

/**
 * Runs the built CLI in `cwd` (with `env` added to this process's), as a user runs it: its time as
 * the caller sees it, and what it wrote to stderr; a failure throws with that stderr.
 */
export function cliTimer(cwd: string, env: NodeJS.ProcessEnv = {}) {
  return (...args: string[]) => {
    const start = performance.now();
    const result = spawnSync(process.execPath, [CLI, ...args], {
      cwd,
      stdio: ['ignore', 'ignore', 'pipe'],
      encoding: 'utf8',
      env: { ...process.env, ...env },
    });
    if (result.status !== 0)
      throw new Error(`vmkit ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
    return { ms: round(performance.now() - start), stderr: result.stderr };
  };
}

// ---------------------------------------------------------------------------------------------
// Statistics

export const round = (ms: number) => Math.round(ms * 10) / 10;
export const ratio = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;
export const sum = (values: number[]) => round(values.reduce((total, value) => total + value, 0));

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const value = sorted.length % 2 === 1 ? sorted[mid] : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
  return round(value ?? Number.NaN);
}

/** The host's load averages (1, 5, 15 min), to two decimals. */
/** The kernel's USER_HZ, 100 on every Linux architecture vmkit runs on. */
const CLOCK_TICKS_PER_SECOND = 100;
/**
 * CPU time (user + system) a process has used so far, from /proc: it moves less than wall time
 * when other work shares the host, so it shows better what the guest itself had to do.
 */
export function processCpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  const ticks = Number(fields[11]) + Number(fields[12]); // utime and stime, fields 14 and 15
  return Math.round((ticks * 1000) / CLOCK_TICKS_PER_SECOND);
}
export const loadAverages = () => loadavg().map((l) => Math.round(l * 100) / 100);

// ---------------------------------------------------------------------------------------------
// Command line: every benchmark option is a whole number, plus --help.

/** Bad command-line use: reported in one line with a pointer to --help, no stack. */
export class UsageError extends Error {}

export interface IntOption {
  default: number;
  /** Smallest value allowed (default 1). */
  min?: number;
}

/**
 * Parses `--name N` options (strict: anything else is a UsageError). Prints `usage` and returns
 * undefined for --help; otherwise every option's value, its default when not given.
 */
export function parseIntOptions<K extends string>(
  usage: string,
  spec: Record<K, IntOption>,
): Record<K, number> | undefined {
  const names = Object.keys(spec) as K[];
  const options: NonNullable<ParseArgsConfig['options']> = { help: { type: 'boolean', short: 'h' } };
  for (const name of names) options[name] = { type: 'string' };
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ options, strict: true, allowPositionals: false }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) {
    process.stdout.write(usage);
    return undefined;
  }
  const parsed = {} as Record<K, number>;
  for (const name of names) {
    const raw = values[name];
    parsed[name] = wholeNumber(name, typeof raw === 'string' ? raw : undefined, spec[name]);
  }
  return parsed;
}

function wholeNumber(name: string, value: string | undefined, option: IntOption): number {
  if (value === undefined) return option.default;
  const min = option.min ?? 1;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    throw new UsageError(`--${name} must be a whole number of at least ${min}, not ${JSON.stringify(value)}`);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Environment: QEMU, image, accelerator

/** The QEMU binary vmkit runs (the same override it honours). */
export function qemuBinary(): string {
  return process.env.VMKIT_QEMU || 'qemu-system-x86_64';
}

async function qemuVersion(): Promise<string> {
  const { stdout } = await promisify(execFile)(qemuBinary(), ['--version']);
  return stdout.split('\n')[0]?.trim() ?? '';
}

export interface Environment {
  qemuVersion: string;
  image: BootImage;
  /** buildImage('tiny') call to resolved: a cache lookup once the image is built. */
  imageLookupMs: number;
  accel: AccelDecision;
}

/** Finds (or builds) the tiny image and the accelerator, and logs both. */
export async function environment(): Promise<Environment> {
  const version = await qemuVersion();
  const began = performance.now();
  const image = await buildImage('tiny', { onProgress: log });
  const imageLookupMs = round(performance.now() - began);
  // The same probe as the benchmarks' machines make (they name no runtime, so use the default one).
  const accel = await chooseAccel('auto', new Runtime());
  log(`${version}; ${accel.accel.toUpperCase()}: ${accel.reason}`);
  log(`image ${image.name} ${image.key.slice(0, 12)} (kernel ${image.kernelRelease})`);
  return { qemuVersion: version, image, imageLookupMs, accel };
}

/** The report fields that say what was measured on. */
export function describeEnvironment(env: Environment) {
  return {
    image: env.image.name,
    imageKey: env.image.key,
    kernelRelease: env.image.kernelRelease,
    qemuVersion: env.qemuVersion,
    accel: env.accel.accel,
    accelReason: env.accel.reason,
  };
}

export const hostCpus = () => cpus().length;

// ---------------------------------------------------------------------------------------------
// Cleanup: machines until closed; benchmark-specific synchronous hooks (kill children, remove
// files) on exit and on signals.

const openMachines = new Set<Machine>();
const syncCleanups: Array<() => void> = [];

/** Marks a machine as this benchmark's to close at the end (and on signals). */
export function adoptMachine<T extends Machine>(machine: T): T {
  openMachines.add(machine);
  return machine;
}

/** Closes a machine (idempotent) and returns how long close() took, ms. */
export async function closeMachine(machine: Machine): Promise<number> {
  const began = performance.now();
  try {
    await machine.close();
  } finally {
    openMachines.delete(machine);
  }
  return round(performance.now() - began);
}

/**
 * Registers a synchronous cleanup, run at process exit (uncaught errors, process.exit), on
 * SIGINT/SIGTERM/SIGHUP and at the end of runBenchmark(). It must be safe to run more than once.
 */
export function onCleanup(cleanup: () => void): void {
  syncCleanups.push(cleanup);
}

function runSyncCleanups(): void {
  for (const cleanup of syncCleanups) {
    try {
      cleanup();
    } catch (error) {
      log(`cleanup failed: ${(error as Error).message}`);
    }
  }
}

// Synchronous last resort: vmkit kills its own machines at exit.
process.on('exit', runSyncCleanups);

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping every QEMU this benchmark started`);
    // Closing kills each machine's QEMU; vmkit's exit handler would do it too.
    for (const machine of openMachines) void machine.close();
    runSyncCleanups();
    process.exit(signal === 'SIGINT' ? 130 : signal === 'SIGTERM' ? 143 : 129);
  });
}

/**
 * Runs a benchmark's main: exit status 2 for bad usage, 1 for a failure (logged with its stack).
 * Afterwards, whatever happened: `cleanup`, then every machine still open is closed, then the
 * synchronous cleanups run.
 */
export async function runBenchmark(main: () => Promise<void>, cleanup?: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`bench: ${error.message} (see --help)\n`);
      process.exitCode = 2;
    } else {
      log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      process.exitCode = 1;
    }
  } finally {
    try {
      await cleanup?.();
    } catch (error) {
      log(`cleanup failed: ${(error as Error).message}`);
      process.exitCode ||= 1;
    }
    await Promise.allSettled([...openMachines].map((machine) => closeMachine(machine)));
    runSyncCleanups();
  }
}

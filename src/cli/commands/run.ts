import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AccelRequest } from '../../backends/accel.js';
import type { Backend } from '../../backends/backend.js';
import { backendNamed } from '../../backends/index.js';
import { type MockBackend, mockBackend } from '../../backends/mock/backend.js';
import { loadMockScript } from '../../backends/mock/options.js';
import { waitForDebugging } from '../../driver/debug.js';
import { interactiveDefinition } from '../../driver/interactive.js';
import { RunRecorder } from '../../driver/recorder.js';
import { asTestDefinition, runTest, type TestDefinition } from '../../driver/runner.js';
import { registerScriptLoader } from '../../driver/script-loader.js';
import { parseShard, readTimings, writeTimings } from '../../driver/shard.js';
import { ConfigError, VmmStartError } from '../../errors.js';
import type { Machine } from '../../machine/machine.js';
import { Runtime } from '../../runtime/runtime.js';
import { ensureDir } from '../../util/files.js';
import { RunLog } from '../../util/log.js';
import { MAX_TIMER_MS } from '../../util/time.js';
import { which } from '../../util/which.js';

export interface RunCommandOptions {
  keep?: boolean;
  timeout?: number;
  console?: boolean;
  verbose?: boolean;
  output?: string;
  junit?: string;
  report?: string;
  fresh?: boolean;
  grep?: RegExp;
  /** `i/n`: run the i-th of n parts of the suite's tests (after --grep). */
  shard?: string;
  /** A timings file to balance the shards by (written by --write-timings or `vmkit report merge`). */
  timings?: string;
  /** Write each test's duration here when the run ends. */
  writeTimings?: string;
  accel?: AccelRequest;
  capture?: boolean;
  interactive?: boolean;
  debugOnFailure?: boolean;
  debugWait?: number;
  /** Run every machine on this backend (`mock`: no VMM, commands answered from `mockScript`). */
  backend?: string;
  /** A mock script file (JSON or YAML) for `--backend mock`. */
  mockScript?: string;
}

/** `vmkit run`: loads a test script (TypeScript through tsx) and runs it. Returns the exit code. */
export async function runCommand(script: string, options: RunCommandOptions): Promise<number> {
  const shard = options.shard === undefined ? undefined : parseShard(options.shard);
  if (options.timings !== undefined && !shard)
    throw new ConfigError('--timings balances shards: give --shard i/n too');
  const timings = options.timings === undefined ? undefined : await readTimings(options.timings);
  if (options.writeTimings) await checkWritable(options.writeTimings, '--write-timings');
  const path = resolve(script);
  try {
    await access(path);
  } catch (error) {
    throw new ConfigError(
      `cannot read test script ${script}: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
  let loaded: { default?: unknown };
  try {
    await registerScriptLoader();
    loaded = (await import(pathToFileURL(path).href)) as { default?: unknown };
  } catch (error) {
    throw new ConfigError(`cannot load test script ${script}: ${describeLoadError(error)}`);
  }
  const loadedDefinition = asTestDefinition(loaded.default, script);
  if (shard && !loadedDefinition.tests)
    throw new ConfigError(`--shard splits the tests of a suite (tests: {...}); ${script} has a single test`);
  const backend = await chosenBackend(options);
  const chosen = options.interactive ? interactiveDefinition(loadedDefinition) : loadedDefinition;
  const definition = options.mockScript ? usingWholeScript(chosen, backend as MockBackend) : chosen;
  const captureDir = options.capture ? await makeOutputDir(options.output ?? 'vmkit-output') : undefined;
  const program = (backend ?? backendNamed()).program;
  if (program && !(await which(program.command()))) throw new VmmStartError(program.missing());

  const log = new RunLog();
  const runtime = new Runtime({ keep: options.keep });
  // Made before any machine starts: a report path that cannot be written is bad input (exit 2).
  const recorder = await RunRecorder.create(
    options.output ?? (options.report ? resolve(options.report) : join(runtime.runDir, 'output')),
    definition.name ?? basename(script),
    {
      junit: options.junit,
      reportDir: options.report,
      temporary: !options.output && !options.report && !options.keep,
    },
  );
  const started = performance.now();
  // While --debug-on-failure waits, a signal ends the wait and the run cleans up as usual.
  let endDebugWait: (() => void) | undefined;
  const interrupted = (signal: NodeJS.Signals, code: number) => async () => {
    if (endDebugWait) return endDebugWait();
    log.line('vmkit', `interrupted by ${signal}: stopping every machine`);
    await runtime.stopProcesses();
    await recorder.finish('interrupted', Math.round(performance.now() - started), log).catch(() => {});
    process.exit(code); // the exit hook removes the run's state folder
  };
  process.on('SIGINT', interrupted('SIGINT', 130));
  process.on('SIGTERM', interrupted('SIGTERM', 143));

  if (shard && !options.output && !options.report)
    log.line(
      'vmkit',
      "no --output: this shard's events go with the run, so vmkit report merge cannot use them",
    );
  let debugged = false;
  log.line('vmkit', `running ${definition.name ?? script}${options.interactive ? ' interactively' : ''}`);
  const report = await runTest(definition, {
    keep: options.keep,
    accel: options.accel,
    backend,
    console: options.console,
    verbose: options.verbose,
    outputDir: options.output,
    fresh: options.fresh,
    grep: options.grep,
    shard,
    timings,
    captureDir,
    // An interactive session lasts as long as the person at it, unless --timeout says otherwise.
    timeoutMs: options.timeout ?? (options.interactive ? MAX_TIMER_MS : undefined),
    log,
    runtime,
    recorder,
    ...(options.debugOnFailure
      ? {
          onFailure: async (machines: Machine[]) => {
            if (debugged) return; // the first failure only
            debugged = true;
            const ended = new Promise<void>((resolve) => {
              endDebugWait = resolve;
            });
            await waitForDebugging(machines, {
              runId: runtime.runId,
              timeoutMs: options.debugWait ?? 600_000,
              log,
              interrupted: ended,
            });
            endDebugWait = undefined;
          },
        }
      : {}),
  });
  await runtime.close();
  if (options.writeTimings && report.tests) {
    const durations = Object.fromEntries(report.tests.map((test) => [test.name, test.durationMs]));
    await writeTimings(resolve(options.writeTimings), definition.name ?? basename(script), durations);
    log.line('vmkit', `timings in ${resolve(options.writeTimings)}`);
  }
  return report.passed ? 0 : 1;
}

/** The backend `--backend` names; with `--mock-script`, a mock that answers from that file. */
async function chosenBackend(options: RunCommandOptions): Promise<Backend | undefined> {
  if (options.mockScript === undefined) return options.backend ? backendNamed(options.backend) : undefined;
  if (options.backend !== undefined && options.backend !== 'mock')
    throw new ConfigError(`--mock-script is for --backend mock, not --backend ${options.backend}`);
  return mockBackend(await loadMockScript(options.mockScript));
}

/** The test, then a check that it used every step of its mock script (a step left over fails it). */
function usingWholeScript(definition: TestDefinition, backend: MockBackend): TestDefinition {
  const body = definition.test;
  if (!body) return definition;
  return {
    ...definition,
    test: async (context) => {
      await body(context);
      backend.verify();
    },
  };
}

/** The run's output folder, made up front so that a bad path is bad input before any machine starts. */
async function makeOutputDir(dir: string): Promise<string> {
  const path = resolve(dir);
  try {
    await ensureDir(path);
    await access(path, constants.W_OK);
  } catch (error) {
    throw new ConfigError(
      `--output ${dir}: cannot make or write the folder: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
  return path;
}

/** A file that can be written at the end of the run: its folder exists and is writable. */
async function checkWritable(file: string, flag: string): Promise<void> {
  const parent = dirname(resolve(file));
  try {
    await access(parent, constants.W_OK);
  } catch (error) {
    throw new ConfigError(
      `${flag} ${file}: cannot write into ${parent}: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
}

interface TransformMessage {
  text: string;
  location?: { file: string; line: number; column: number; lineText?: string } | null;
}

/** What went wrong loading a script, as file:line:column: message (esbuild reports syntax errors so). */
function describeLoadError(error: unknown): string {
  const errors = (error as { errors?: TransformMessage[] }).errors;
  const first = Array.isArray(errors) ? errors[0] : undefined;
  if (first?.location) {
    const { file, line, column, lineText } = first.location;
    const more = errors && errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
    return `${file}:${line}:${column + 1}: ${first.text}${more}${lineText ? `\n  | ${lineText}` : ''}`;
  }
  if (first) return first.text;
  const message = error instanceof Error ? error.message : String(error);
  // tsx reports "Transform failed with 1 error:" and the located message on the next line.
  const lines = message.split('\n').filter((line) => !/^Transform failed with \d+ errors?:$/.test(line));
  return lines.slice(0, 3).join('\n');
}

import { constants } from 'node:fs';
import { access, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import type { Machine } from '../machine/machine.js';
import { ensureDir } from '../util/files.js';
import type { RunLog } from '../util/log.js';
import { collectDiagnostics } from './diagnostics.js';
import { htmlReport, type ReportImage } from './html-report.js';
import { junitXml } from './junit.js';
import { bounded, LEDGER_LIMITS, Ledger, readLedger } from './ledger.js';

export interface ReportOptions {
  /** Write JUnit XML to this file. */
  junit?: string;
  /** Write `report.html` into this folder. */
  reportDir?: string;
  /** The output folder goes away with the run (no --output): do not point the user at it. */
  temporary?: boolean;
}

/**
 * What a run leaves behind in its output folder: the ledger (events.jsonl), diagnostics bundles
 * of failed machines, and, when asked, JUnit XML and the HTML report, also when interrupted.
 */
export class RunRecorder {
  readonly ledger: Ledger;
  private finished = false;

  private constructor(
    readonly outputDir: string,
    readonly title: string,
    private readonly options: ReportOptions,
  ) {
    this.ledger = new Ledger(outputDir);
  }

  /** Checks every path first (bad ones are a ConfigError), then opens the ledger. */
  static async create(outputDir: string, title: string, options: ReportOptions = {}): Promise<RunRecorder> {
    if (options.reportDir) {
      await ensureDir(resolve(options.reportDir)).catch((error: Error) => {
        throw new ConfigError(`--report ${options.reportDir}: cannot create the folder: ${error.message}`);
      });
      await writable(resolve(options.reportDir), '--report');
    }
    const output = resolve(outputDir);
    await ensureDir(output).catch((error: Error) => {
      throw new ConfigError(`--output ${outputDir}: cannot create the folder: ${error.message}`);
    });
    await writable(output, '--output');
    if (options.junit) {
      const parent = dirname(resolve(options.junit));
      const info = await stat(parent).catch(() => undefined);
      if (!info?.isDirectory())
        throw new ConfigError(`--junit ${options.junit}: the folder ${parent} does not exist`);
      await writable(parent, '--junit');
    }
    return new RunRecorder(output, title, options);
  }

  /** Records a failure with the console tails of `machines`, and writes their diagnostics. */
  async failure(step: string, error: Error, machines: Machine[], test?: string): Promise<void> {
    const detail: Record<string, string> = {};
    for (const machine of machines) detail[machine.name] = machine.console.tail(3000);
    this.ledger.record({
      kind: 'failure',
      name: step,
      outcome: 'failed',
      error: bounded(error.stack ?? error.message, LEDGER_LIMITS.error),
      detail,
      ...(test ? { test } : {}),
    });
    const dir = join(this.outputDir, 'diagnostics', test ? safe(test) : '');
    await Promise.all(machines.map((machine) => this.bundle(machine, dir, test)));
  }

  private async bundle(machine: Machine, dir: string, test?: string): Promise<void> {
    {
      const started = performance.now();
      const files = await collectDiagnostics(machine, dir).catch((failed: Error) => [
        `failed: ${failed.message}`,
      ]);
      this.ledger.record({
        kind: 'diagnostics',
        machine: machine.name,
        name: 'diagnostics bundle',
        durationMs: Math.round(performance.now() - started),
        detail: { dir: join(dir, machine.name), files: files.join(', ') },
        ...(test ? { test } : {}),
      });
    }
  }

  /** Closes the ledger and writes the reports asked for; says where in the log. Runs once. */
  async finish(outcome: 'ok' | 'failed' | 'interrupted', durationMs: number, log?: RunLog): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.ledger.record({ kind: 'run', name: this.title, outcome, durationMs, at: 0 });
    this.ledger.close();
    const events = await readLedger(this.ledger.path);
    if (this.options.junit) {
      await writeFile(resolve(this.options.junit), junitXml(this.title, events));
      log?.line('vmkit', `JUnit XML in ${resolve(this.options.junit)}`);
    }
    if (this.options.reportDir) {
      const file = join(resolve(this.options.reportDir), 'report.html');
      await writeFile(file, htmlReport(this.title, events, await findScreenshots(this.outputDir)));
      log?.line('vmkit', `report in ${file}`);
    }
    if (!this.options.temporary) log?.line('vmkit', `events in ${this.ledger.path}`);
  }
}

const MAX_IMAGES = 30;
const MAX_IMAGE_BYTES = 4 * 1024 * 1024;

/** PNG files in the output folder and the folders below it (three levels), oldest first, bounded. */
export async function findScreenshots(dir: string): Promise<ReportImage[]> {
  const found: Array<{ name: string; path: string; mtimeMs: number }> = [];
  const walk = async (relative: string, depth: number): Promise<void> => {
    const entries = await readdir(join(dir, relative), { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      const name = relative ? `${relative}/${entry.name}` : entry.name;
      if (entry.isDirectory() && depth < 3) await walk(name, depth + 1);
      else if (entry.isFile() && entry.name.endsWith('.png')) {
        const info = await stat(join(dir, name)).catch(() => undefined);
        if (info && info.size <= MAX_IMAGE_BYTES)
          found.push({ name, path: join(dir, name), mtimeMs: info.mtimeMs });
      }
    }
  };
  await walk('', 0);
  found.sort((a, b) => a.mtimeMs - b.mtimeMs);
  const images: ReportImage[] = [];
  for (const { name, path } of found.slice(0, MAX_IMAGES)) {
    const png = await readFile(path).catch(() => undefined);
    if (png) images.push({ name, png });
  }
  return images;
}

const safe = (name: string) => name.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 80);

async function writable(dir: string, flag: string): Promise<void> {
  await access(dir, constants.W_OK).catch(() => {
    throw new ConfigError(`${flag} ${dir}: the folder is not writable`);
  });
}

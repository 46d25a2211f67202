// Fleet exec throughput on one tiny instance: sequential Fleet.exec calls, concurrent ones in one
// process (how the fleet agent serves them), and concurrent `vmkit fleet instance exec` CLI
// processes (needs the built CLI, `npm run build`). Counts failures rather than stopping at the
// first. Prints one JSON object.
//
//   node --import tsx bench/fleet-exec.ts [--sequential N] [--concurrent N] [--cli N]

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Fleet } from '../src/fleet/fleet.js';
import { processesNaming, stopDetached } from '../src/runtime/detached.js';
import { loadAverages, log, parseIntOptions, round } from './lib.js';

const USAGE = `usage: node --import tsx bench/fleet-exec.ts [--sequential N] [--concurrent N] [--cli N]
Execs per second on one tiny fleet instance: one at a time, N at once in one process, and N CLI
processes at once (0 skips a part).
`;
const options = parseIntOptions(USAGE, {
  sequential: { default: 20, min: 0 },
  concurrent: { default: 100, min: 0 },
  cli: { default: 30, min: 0 },
});
const cli = join(fileURLToPath(new URL('..', import.meta.url)), 'dist/cli/main.js');

/** Runs `count` calls of `one` at once; how many failed, how long it all took, per second. */
async function burst(count: number, one: (i: number) => Promise<boolean>) {
  const start = performance.now();
  const ok = await Promise.all(Array.from({ length: count }, (_, i) => one(i).catch(() => false)));
  const ms = performance.now() - start;
  const failed = ok.filter((x) => !x).length;
  // Successful calls only: a burst that fails fast is not a fast one.
  return { calls: count, failed, ms: round(ms), okPerSecond: round(((count - failed) * 1000) / ms) };
}

function cliExec(dir: string, path: string, i: number): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [
      cli,
      'fleet',
      '--fleet-dir',
      dir,
      'instance',
      'exec',
      path,
      'echo',
      `${i}`,
    ]);
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
    });
    child.on('close', (code) => resolve(code === 0 && out === `${i}\n`));
  });
}

if (options) {
  const dir = mkdtempSync('/tmp/vmkit-fexec-bench-');
  const fleet = new Fleet({ dir, log });
  const path = 'bench/pool/one';
  const echo = async (i: number) => (await fleet.exec(path, ['echo', `${i}`])).stdout.toString() === `${i}\n`;
  try {
    fleet.createTenant({ id: 'bench', subnet: '10.98.0.0/24' });
    await fleet.createPool({ tenant: 'bench', id: 'pool', memoryMiB: 128 });
    await fleet.createInstance('bench/pool', 'one');
    await fleet.start(path);
    const started = performance.now();
    let sequentialFailed = 0;
    for (let i = 0; i < options.sequential; i++) if (!(await echo(i).catch(() => false))) sequentialFailed++;
    const sequentialMs = performance.now() - started;
    const result = {
      loadAverages: loadAverages(),
      sequential: {
        calls: options.sequential,
        failed: sequentialFailed,
        perSecond: round((options.sequential * 1000) / sequentialMs),
      },
      concurrentInProcess: options.concurrent ? await burst(options.concurrent, echo) : undefined,
      concurrentCli: options.cli ? await burst(options.cli, (i) => cliExec(dir, path, i)) : undefined,
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await fleet.destroyTenant('bench').catch(() => {});
    await fleet.close();
    for (const leftover of processesNaming(dir)) await stopDetached(leftover, 0);
    rmSync(dir, { recursive: true, force: true });
  }
}

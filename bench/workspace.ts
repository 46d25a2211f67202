// Project VM benchmark, through the built CLI as a user runs it: `vmkit up` from cold against
// `vmkit snapshot restore` (up from a saved snapshot), the sync of a 5,000-file tree (first run,
// no-change run, one changed file), and the exec round trip (the CLI call, and the agent hub's
// own round trip without the CLI's start-up). Prints one JSON object.
//
//   npm run build && node --import tsx bench/workspace.ts [--files N] [--rounds N]

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HubClient } from '../src/project/hub-client.js';
import { processesNaming, stopDetached } from '../src/runtime/detached.js';
import { loadAverages, log, median, parseIntOptions, ratio, round } from './lib.js';

const USAGE = `usage: node --import tsx bench/workspace.ts [--files N] [--rounds N]
Cold up vs up from a snapshot, sync of an N-file tree (default 5000), exec round trips.
`;
const options = parseIntOptions(USAGE, { files: { default: 5000, min: 1 }, rounds: { default: 5, min: 1 } });
const cli = new URL('../dist/cli/main.js', import.meta.url).pathname;

if (options) {
  const project = mkdtempSync('/tmp/vmkit-ws-bench-');
  /** Runs the CLI; its time as the caller sees it, and what it wrote to stderr. */
  const timedCli = (...args: string[]) => {
    const start = performance.now();
    const result = spawnSync(process.execPath, [cli, ...args], {
      cwd: project,
      stdio: ['ignore', 'ignore', 'pipe'],
      encoding: 'utf8',
    });
    if (result.status !== 0)
      throw new Error(`vmkit ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
    return { ms: round(performance.now() - start), stderr: result.stderr };
  };
  try {
    writeFileSync(
      join(project, 'vmkit.config.json'),
      JSON.stringify({ vms: { bench: { image: 'tiny', memoryMiB: 256, diskMiB: 512 } } }),
    );
    log('cold up');
    const cold = timedCli('up');
    const tree = join(project, 'tree');
    for (let i = 0; i < options.files; i++) {
      const dir = join(tree, `d${Math.floor(i / 100)}`);
      if (i % 100 === 0) mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, `f${i}.txt`), `file ${i}\n`.repeat(1 + (i % 20)));
    }
    const inProcess = (stderr: string) => Number(/in (\d+) ms/.exec(stderr)?.[1] ?? Number.NaN);
    log(`sync of ${options.files} files, first run`);
    const first = timedCli('sync');
    log('sync, no change');
    const none = [];
    for (let round = 0; round < options.rounds; round++) none.push(timedCli('sync'));
    writeFileSync(join(tree, 'd0', 'f0.txt'), 'changed\n');
    const one = timedCli('sync');
    log('exec round trips');
    const execs = [];
    for (let round = 0; round < options.rounds; round++) execs.push(timedCli('exec', '--', 'true').ms);
    const hub = await HubClient.connect(join(project, '.vmkit', 'bench', 'run'), 'bench');
    const hubTrips: number[] = [];
    for (let round = 0; round < 20; round++) {
      const start = performance.now();
      await hub.run('true', 10_000);
      hubTrips.push(performance.now() - start);
    }
    hub.close();
    const nodeStart = [];
    for (let round = 0; round < options.rounds; round++) nodeStart.push(timedCli('--version').ms);
    log('snapshot save and restore');
    const save = timedCli('snapshot', 'save', 'clean');
    const restores = [];
    for (let round = 0; round < Math.min(3, options.rounds); round++)
      restores.push(timedCli('snapshot', 'restore', 'clean').ms);
    timedCli('down');
    process.stdout.write(
      `${JSON.stringify(
        {
          files: options.files,
          upColdMs: cold.ms,
          upFromSnapshotMs: median(restores),
          upFromSnapshotOverCold: ratio(median(restores), cold.ms),
          snapshotSaveMs: save.ms,
          sync: {
            transport: "vmkit's own (tar through the backdoor's transfer port)",
            firstRunMs: first.ms,
            firstRunSyncMs: inProcess(first.stderr),
            noChangeMs: median(none.map((run) => run.ms)),
            noChangeSyncMs: median(none.map((run) => inProcess(run.stderr))),
            oneChangedFileMs: one.ms,
            rsync: 'not measured: the tiny image has neither rsync nor sshd',
          },
          exec: {
            cliRoundTripMs: median(execs),
            hubRoundTripMs: round(median(hubTrips)),
            cliStartupMs: median(nodeStart),
          },
          loadAverages: loadAverages(),
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    for (const process of processesNaming(project)) await stopDetached(process, 0);
    rmSync(project, { recursive: true, force: true });
  }
}

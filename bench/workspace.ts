// Project VM benchmark, through the built CLI as a user runs it: `vmkit up` from cold against
// `vmkit snapshot restore` (up from a saved snapshot), and the exec round trip (the CLI call, and
// the agent hub's own round trip without the CLI's start-up), on a tiny VM; the sync of a
// 5,000-file tree (first run, no-change run, one changed file) by vmkit's own transfer and by
// rsync over SSH side by side, on one Debian VM with sshd and rsync
// (examples/project-vm/debian-ssh.json). Prints one JSON object.
//
//   npm run build && node --import tsx bench/workspace.ts [--files N] [--rounds N]

import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HubClient } from '../src/project/hub-client.js';
import { processesNaming, stopDetached } from '../src/runtime/detached.js';
import { cliTimer, loadAverages, log, median, parseIntOptions, ratio, round } from './lib.js';

const USAGE = `usage: node --import tsx bench/workspace.ts [--files N] [--rounds N]
Cold up vs up from a snapshot, exec round trips; sync of an N-file tree (default 5000), vmkit's
own transfer against rsync over SSH.
`;
const options = parseIntOptions(USAGE, { files: { default: 5000, min: 1 }, rounds: { default: 5, min: 1 } });

if (options) {
  const project = mkdtempSync('/tmp/vmkit-ws-bench-');
  const timedCli = cliTimer(project);
  try {
    writeFileSync(
      join(project, 'vmkit.config.json'),
      JSON.stringify({
        vms: {
          bench: { image: 'tiny', memoryMiB: 256, diskMiB: 512, sync: [] },
          deb: {
            image: 'debian-ssh.json',
            memoryMiB: 512,
            diskMiB: 512,
            sync: [{ host: 'tree', guest: '/work/tree' }],
          },
        },
      }),
    );
    copyFileSync(
      new URL('../examples/project-vm/debian-ssh.json', import.meta.url).pathname,
      join(project, 'debian-ssh.json'),
    );
    log('cold up');
    // --fresh: a boot, not a restore from the boot cache (bench:project-up compares the two).
    const cold = timedCli('up', '--fresh');
    const tree = join(project, 'tree');
    for (let i = 0; i < options.files; i++) {
      const dir = join(tree, `d${Math.floor(i / 100)}`);
      if (i % 100 === 0) mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, `f${i}.txt`), `file ${i}\n`.repeat(1 + (i % 20)));
    }
    const inProcess = (stderr: string) => Number(/in (\d+) ms/.exec(stderr)?.[1] ?? Number.NaN);
    log('up of the Debian VM with sshd and rsync');
    const debUp = timedCli('up', 'deb', '--fresh');
    // Once, so that the first rsync does not also wait for sshd to come up late in the boot.
    timedCli('ssh', 'deb', '--', 'true');
    const syncRuns = (method: 'vmkit' | 'rsync') => {
      log(`sync of ${options.files} files by ${method}: first run, no change, one changed file`);
      timedCli('exec', 'deb', '--', 'rm', '-rf', '/work/tree');
      const first = timedCli('sync', 'deb', '--method', method, '--full');
      const none = [];
      for (let round = 0; round < options.rounds; round++)
        none.push(timedCli('sync', 'deb', '--method', method));
      writeFileSync(join(tree, 'd0', 'f0.txt'), `changed for ${method}\n`);
      const one = timedCli('sync', 'deb', '--method', method);
      return {
        firstRunMs: first.ms,
        firstRunSyncMs: inProcess(first.stderr),
        noChangeMs: median(none.map((run) => run.ms)),
        noChangeSyncMs: median(none.map((run) => inProcess(run.stderr))),
        oneChangedFileMs: one.ms,
      };
    };
    const own = syncRuns('vmkit');
    const rsync = syncRuns('rsync');
    const sshCalls = [];
    for (let round = 0; round < options.rounds; round++)
      sshCalls.push(timedCli('ssh', 'deb', '--', 'true').ms);
    timedCli('down', 'deb');
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
            guest: 'debian-ssh (examples/project-vm/debian-ssh.json)',
            debianUpColdMs: debUp.ms,
            // *Ms: the CLI call as a user sees it; *SyncMs: the copy alone, as the CLI reports it.
            vmkit: { transport: "tar through the backdoor's transfer port", ...own },
            rsync: { transport: 'rsync over ssh to the forwarded sshd port', ...rsync },
            rsyncOverVmkit: {
              firstRun: ratio(rsync.firstRunMs, own.firstRunMs),
              noChange: ratio(rsync.noChangeMs, own.noChangeMs),
              oneChangedFile: ratio(rsync.oneChangedFileMs, own.oneChangedFileMs),
            },
            sshCommandMs: median(sshCalls),
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

import type { Command } from 'commander';

/** `vmkit report merge`: one report from the shards of a suite. */
export function registerReportCommands(program: Command): void {
  const report = program
    .command('report')
    .description('reports of runs: merge the shards of a suite into one');
  report
    .command('merge')
    .description(
      "join the shards of one suite (the --output folders of vmkit run --shard i/n) into one run's events.jsonl, " +
        'junit.xml, report.html and timings.json (for --timings next time); exits 0 when merged, whatever the tests did',
    )
    .requiredOption('--out <dir>', 'where the merged report goes (made if missing)')
    .argument('<shards...>', "the shards' output folders, or their events.jsonl files")
    .action(async (shards: string[], options: { out: string }) => {
      const { mergeReports } = await import('../../driver/merge-files.js');
      const merged = await mergeReports(shards, options.out);
      const tests = merged.events.filter((event) => event.kind === 'test' && event.durationMs !== undefined);
      const failed = tests.filter((event) => event.outcome !== 'ok').length;
      const out = (line: string) => process.stdout.write(`${line}\n`);
      out(
        `merged ${merged.shards.length} shard${merged.shards.length === 1 ? '' : 's'} (${merged.shards.join(', ')}) of "${merged.suite}": ${tests.length} tests, ${failed} failed`,
      );
      if (merged.missing.length)
        out(
          `warning: shard${merged.missing.length === 1 ? '' : 's'} ${merged.missing.join(', ')} not given: their tests are not in the report`,
        );
      for (const file of merged.files) out(`  ${file}`);
    });
}

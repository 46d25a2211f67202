import type { Command } from 'commander';
import { formatReport } from '../../fleet/desired/reconcile.js';
import { loadDesired } from '../../fleet/desired/schema.js';
import { output, withFleet } from './fleet-common.js';

/** `vmkit fleet plan <file>` and `vmkit fleet reconcile <file>`: the fleet from a desired-state document. */
export function registerDesiredCommands(fleet: Command): void {
  fleet
    .command('plan')
    .description('show, phase by phase, what reconcile would do for a desired-state file (JSON or YAML)')
    .argument('<file>')
    .option('--prune', 'include destroying pools and tenants the document no longer lists')
    .action(async (file: string, options, command: Command) => {
      const doc = loadDesired(file);
      await withFleet(command, async (fleet, json) => {
        const report = await fleet.reconcile(doc, { prune: options.prune, dryRun: true });
        output(json, report, () => formatReport(report));
      });
    });
  fleet
    .command('reconcile')
    .description(
      'converge the fleet towards a desired-state file: tenants, pools, scale, prune, sleep policy',
    )
    .argument('<file>')
    .option('--prune', 'destroy pools and tenants the document no longer lists')
    .action(async (file: string, options, command: Command) => {
      const doc = loadDesired(file);
      await withFleet(command, async (fleet, json) => {
        const report = await fleet.reconcile(doc, {
          prune: options.prune,
          onAction: (a) => process.stderr.write(`vmkit: ${a.phase}: ${a.action} ${a.target}\n`),
          onProgress: (line) => process.stderr.write(`image: ${line}\n`),
        });
        output(json, report, () => formatReport(report));
        if (report.failed > 0) process.exitCode = 1;
      });
    });
}

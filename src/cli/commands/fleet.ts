import type { Command } from 'commander';
import { type Decision, POLICY_DEFAULTS } from '../../fleet/policy/policy.js';
import { validateId } from '../../fleet/state/ids.js';
import { tenantAudit } from '../../fleet/vmm/metadata-reads.js';
import { registerAgentCommands } from './fleet-agent.js';
import { builderOption, output, wholeOption, withFleet } from './fleet-common.js';
import { registerDesiredCommands } from './fleet-desired.js';
import { registerInstanceCommands } from './fleet-instance.js';
import { registerPoolCommands } from './fleet-pool.js';
import { registerTenantCommands } from './fleet-tenant.js';

/** `vmkit fleet ...`: tenants, pools, instances, the audit log and the node. */
export function registerFleetCommands(program: Command): void {
  const fleet = program
    .command('fleet')
    .description('tenants, pools and instances that run, pause, sleep and wake')
    .option(
      '--fleet-dir <dir>',
      'the fleet folder (default $VMKIT_FLEET_DIR, else $XDG_DATA_HOME/vmkit/fleet)',
    )
    .option(
      '--builder <where>',
      'where recipe images are built: vm (default: an ephemeral builder VM, no root needed) or host (mmdebstrap, root)',
      builderOption,
    )
    .option('--json', 'print JSON');
  registerTenantCommands(fleet);
  registerPoolCommands(fleet);
  registerInstanceCommands(fleet);
  registerDesiredCommands(fleet);
  registerAgentCommands(fleet);
  fleet
    .command('audit')
    .description("a tenant's audit log: one event per line")
    .argument('<tenant>')
    .option('--tail <n>', 'only the last N events', wholeOption)
    .action(async (tenant: string, options, command: Command) => {
      validateId(tenant, 'tenant id');
      await withFleet(command, async (fleet, json) => {
        fleet.store.tenant(tenant); // an unknown tenant is a ConfigError, as in the agent's API
        const events = tenantAudit(fleet.dir, fleet.store.listInstances({ tenant }), tenant, options.tail);
        if (json) output(json, events, () => '');
        else for (const event of events) process.stdout.write(`${JSON.stringify(event)}\n`);
      });
    });
  fleet
    .command('policy')
    .description('the sleep policy')
    .command('run')
    .description('put idle instances (and, under memory pressure, the coldest) to sleep')
    .option('--dry-run', 'only say what would happen')
    .option(
      '--idle-seconds <n>',
      `idle after this long without use (default ${POLICY_DEFAULTS.idleSeconds})`,
      wholeOption,
    )
    .option(
      '--cpu-percent <n>',
      `quiet below this CPU use (default ${POLICY_DEFAULTS.cpuPercent})`,
      wholeOption,
    )
    .option(
      '--network-bytes <n>',
      `quiet below this many bytes (default ${POLICY_DEFAULTS.networkBytes})`,
      wholeOption,
    )
    .option(
      '--min-mem-available-mib <n>',
      `memory pressure below this MemAvailable (default ${POLICY_DEFAULTS.minMemAvailableMiB})`,
      wholeOption,
    )
    .option(
      '--sample-ms <n>',
      `how long CPU and network are sampled (default ${POLICY_DEFAULTS.sampleMs})`,
      wholeOption,
    )
    .action(async (options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        const decisions = await fleet.runPolicy({
          dryRun: options.dryRun,
          idleSeconds: options.idleSeconds,
          cpuPercent: options.cpuPercent,
          networkBytes: options.networkBytes,
          minMemAvailableMiB: options.minMemAvailableMib,
          sampleMs: options.sampleMs,
        });
        const verb = (d: Decision) =>
          d.action === 'sleep' ? (options.dryRun ? 'would sleep' : 'slept') : 'kept';
        output(
          json,
          decisions,
          () =>
            decisions.map((d) => `${d.path}: ${verb(d)} (${d.reasons.join('; ')})`).join('\n') ||
            'no Running or Warm instances',
        );
      });
    });
  const node = fleet.command('node').description('this host, as the fleet sees it');
  node
    .command('info')
    .description(
      "the host as VMMs get it: accelerator, cgroups and the limits that would not apply, QEMU's sandbox, the jail (uid, namespaces, user namespace or why not)",
    )
    .action(async (_options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        const info = await fleet.nodeInfo();
        output(json, info, () =>
          Object.entries(info)
            .map(([key, value]) => `${key}: ${typeof value === 'object' ? JSON.stringify(value) : value}`)
            .join('\n'),
        );
      });
    });
  node.command('stats').action(async (_options, command: Command) => {
    await withFleet(command, async (fleet, json) => {
      const stats = fleet.nodeStats();
      output(json, stats, () => JSON.stringify(stats, null, 2));
    });
  });
}

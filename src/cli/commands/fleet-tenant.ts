import type { Command } from 'commander';
import { ConfigError } from '../../errors.js';
import { confirmDestroy, output, wholeOption, withFleet } from './fleet-common.js';

function parseSecrets(pairs: string[] | undefined): Record<string, string> {
  const secrets = new Map<string, string>();
  for (const pair of pairs ?? []) {
    const at = pair.indexOf('=');
    if (at < 1) throw new ConfigError(`--secret ${JSON.stringify(pair)}: expected NAME=VALUE`);
    const name = pair.slice(0, at);
    if (secrets.has(name)) throw new ConfigError(`--secret ${name}: given twice`);
    secrets.set(name, pair.slice(at + 1));
  }
  return Object.fromEntries(secrets);
}

export function registerTenantCommands(fleet: Command): void {
  const tenant = fleet.command('tenant').description('tenants: quotas, a subnet of their own, secrets');
  tenant
    .command('create')
    .argument('<tenant>')
    .requiredOption('--subnet <cidr>', "the tenant's network, e.g. 10.20.0.0/24")
    .option('--max-vcpus <n>', 'vCPUs of Running and Warm instances together', wholeOption)
    .option('--max-memory-mib <n>', 'memory of Running and Warm instances together', wholeOption)
    .option('--max-running <n>', 'Running instances at once', wholeOption)
    .option('--max-warm <n>', 'Warm instances at once', wholeOption)
    .option('--max-instances <n>', 'instances per pool', wholeOption)
    .option('--max-disk-mib <n>', 'data disks together', wholeOption)
    .option('--secret <name=value...>', 'secrets for its instances (on /dev/vdb and the metadata endpoint)')
    .option('--outbound', 'give its instances outbound access (a user-mode NIC, eth2); off by default')
    .action(async (id: string, options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        const created = fleet.createTenant({
          id,
          subnet: options.subnet,
          maxVcpus: options.maxVcpus,
          maxMemoryMiB: options.maxMemoryMib,
          maxRunning: options.maxRunning,
          maxWarm: options.maxWarm,
          maxInstances: options.maxInstances,
          maxDiskMiB: options.maxDiskMib,
          secrets: parseSecrets(options.secret),
          outbound: Boolean(options.outbound),
        });
        const { secrets, ...shown } = created;
        output(json, { ...shown, secrets: Object.keys(secrets) }, () => `${created.id}`);
      });
    });
  tenant.command('list').action(async (_options, command: Command) => {
    await withFleet(command, async (fleet, json) => {
      const tenants = fleet.store
        .listTenants()
        .map(({ secrets, ...t }) => ({ ...t, secrets: Object.keys(secrets) }));
      output(json, tenants, () => tenants.map((t) => `${t.id}\t${t.subnet}`).join('\n') || 'no tenants');
    });
  });
  tenant
    .command('info')
    .argument('<tenant>')
    .action(async (id: string, _options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        const { secrets, ...found } = fleet.store.tenant(id);
        const instances = fleet.store.listInstances({ tenant: id });
        const info = {
          ...found,
          secrets: Object.keys(secrets),
          pools: fleet.store.listPools(id).map((p) => p.id),
          instances: instances.length,
        };
        output(json, info, () =>
          [
            `tenant ${info.id}: subnet ${info.subnet}, gateway ${info.gateway}`,
            `quotas: ${Object.entries(info.quotas)
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')}`,
            `pools: ${info.pools.join(', ') || 'none'}; instances: ${info.instances}`,
            `secrets: ${info.secrets.join(', ') || 'none'}`,
          ].join('\n'),
        );
      });
    });
  tenant
    .command('destroy')
    .argument('<tenant>')
    .option('--yes', 'destroy its pools and instances without asking')
    .action(async (id: string, options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        fleet.store.tenant(id);
        await confirmDestroy(`tenant ${id}`, fleet.store.listInstances({ tenant: id }).length, options.yes);
        await fleet.destroyTenant(id);
        output(json, { destroyed: id }, () => `destroyed ${id}`);
      });
    });
}

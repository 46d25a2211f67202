import type { Command } from 'commander';
import { ConfigError } from '../../errors.js';
import type { PoolBuild } from '../../fleet/images/builds.js';
import { describeImage } from '../../fleet/images/image-spec.js';
import { imageOf } from '../../fleet/images/pool-image.js';
import { findBase } from '../../fleet/snapshots/base.js';
import { parseAddress } from '../../fleet/state/ids.js';
import { type ImageRecipe, parseRecipe } from '../../images/recipe.js';
import { readInputFile } from '../../util/files.js';
import { confirmDestroy, output, wholeOption, withFleet } from './fleet-common.js';

/** "built in a builder VM in 41.2 s, by root (pid 12)" or "cached (built on the host ...)". */
function describeBuild(build: PoolBuild): string {
  if (!build.builder && !build.actor) return '';
  const how = build.builder === 'vm' ? 'in a builder VM' : 'on the host';
  const took = build.buildMs !== undefined ? ` in ${(build.buildMs / 1000).toFixed(1)} s` : '';
  const made = build.cached
    ? `cached (built ${how}${took}, ${build.imageBuiltAt ?? '?'})`
    : `built ${how}${took}`;
  return `${build.image ?? ''} ${made}${build.actor ? `, by ${build.actor}` : ''}`.trim();
}

/** --image: a name, or a path to a recipe file (it ends in .json or names a folder). */
function imageOption(value: string): string | ImageRecipe {
  if (!value.endsWith('.json') && !value.includes('/')) return value;
  const text = readInputFile(value, '--image recipe file');
  try {
    return parseRecipe(JSON.parse(text), `recipe ${value}`);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`recipe ${value}: not valid JSON: ${(error as Error).message}`);
  }
}

/** --running, --warm, --sleeping: a pool's desired counts. */
function withDesiredCounts(command: Command): Command {
  return command
    .option('--running <n>', 'desired Running instances', wholeOption)
    .option('--warm <n>', 'desired Warm instances', wholeOption)
    .option('--sleeping <n>', 'desired Sleeping instances', wholeOption);
}

export function registerPoolCommands(fleet: Command): void {
  const pool = fleet
    .command('pool')
    .description('pools: identical instances of one image, with desired counts');
  const create = pool
    .command('create')
    .argument('<tenant/pool>')
    .option(
      '--image <name|recipe.json>',
      'an image name (tiny, debian), or a recipe file ({ "base": "debian", "packages", "files", "run" })',
      'tiny',
    )
    .option('--vcpus <n>', 'vCPUs per instance', wholeOption)
    .option('--memory-mib <n>', 'memory per instance', wholeOption)
    .option('--data-disk-mib <n>', 'data disk per instance', wholeOption)
    .option(
      '--require-limits',
      'refuse to run an instance whose memory, cpu and pids limits cannot all be applied (cgroups not delegated); without it, the instance runs with a warning',
    );
  withDesiredCounts(create).action(async (address: string, options, command: Command) => {
    const { tenant, pool: id } = parseAddress(address, 2);
    await withFleet(command, async (fleet, json) => {
      const created = await fleet.createPool({
        tenant,
        id,
        image: imageOption(options.image),
        vcpus: options.vcpus,
        memoryMiB: options.memoryMib,
        dataDiskMiB: options.dataDiskMib,
        running: options.running,
        warm: options.warm,
        sleeping: options.sleeping,
        requireLimits: options.requireLimits === true,
      });
      output(json, created, () => `${created.tenant}/${created.id}`);
    });
  });
  pool
    .command('list')
    .argument('[tenant]')
    .action(async (tenant: string | undefined, _options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        if (tenant) fleet.store.tenant(tenant); // an unknown tenant is a mistake, not an empty list
        const pools = fleet.store.listPools(tenant);
        output(
          json,
          pools,
          () =>
            pools
              .map(
                (p) =>
                  `${p.tenant}/${p.id}\t${p.image}\t${p.vcpus} vCPU\t${p.memoryMiB} MiB\trunning ${p.desired.running} warm ${p.desired.warm} sleeping ${p.desired.sleeping}`,
              )
              .join('\n') || 'no pools',
        );
      });
    });
  pool
    .command('info')
    .argument('<tenant/pool>')
    .action(async (address: string, _options, command: Command) => {
      const { tenant, pool: id } = parseAddress(address, 2);
      await withFleet(command, async (fleet, json) => {
        const found = fleet.store.pool(tenant, id);
        const instances = fleet.store.listInstances({ tenant, pool: id });
        const base = findBase(fleet.dir, found, found.revision);
        const info = {
          ...found,
          base: base ?? null,
          builds: fleet.store.poolBuilds(tenant, id),
          instances: instances.map((i) => ({ id: i.id, state: i.state })),
        };
        output(json, info, () =>
          [
            `pool ${tenant}/${id}: image ${describeImage(imageOf(found))} (revision ${found.revision}), ${found.vcpus} vCPU, ${found.memoryMiB} MiB, data disk ${found.dataDiskMiB} MiB`,
            `desired: running ${found.desired.running}, warm ${found.desired.warm}, sleeping ${found.desired.sleeping}`,
            `limits: ${found.requireLimits ? 'required (an instance is refused where they cannot all be applied)' : 'applied where the host allows (else a warning)'}`,
            `instances: ${instances.map((i) => `${i.id} ${i.state}`).join(', ') || 'none'}`,
            base
              ? `base snapshot: ${base.id}, RAM ${base.ramDataBytes} bytes in use, made ${base.createdAt}`
              : 'base snapshot: none yet (the next start makes one)',
            'builds:',
            ...info.builds.map((b) => `  ${b.builtAt} ${b.revision} ${describeBuild(b)}`),
          ].join('\n'),
        );
      });
    });
  const scale = pool
    .command('scale')
    .description("set the desired counts (those given) and make the pool's instances match them")
    .argument('<tenant/pool>');
  withDesiredCounts(scale).action(async (address: string, options, command: Command) => {
    const { tenant, pool: id } = parseAddress(address, 2);
    await withFleet(command, async (fleet, json) => {
      const current = fleet.store.pool(tenant, id).desired;
      fleet.store.setDesired(tenant, id, {
        running: options.running ?? current.running,
        warm: options.warm ?? current.warm,
        sleeping: options.sleeping ?? current.sleeping,
      });
      const steps = await fleet.scalePool(address, (step) => {
        if (!json) process.stderr.write(`${step.action} ${step.instance}\n`);
      });
      output(json, steps, () => `${steps.length} step(s)`);
    });
  });
  pool
    .command('rebuild')
    .description("build the pool's image again and invalidate its base snapshot")
    .argument('<tenant/pool>')
    .action(async (address: string, _options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        const rebuilt = await fleet.rebuildPool(address);
        output(json, rebuilt, () =>
          [
            `pool ${address}: revision ${rebuilt.previousRevision} -> ${rebuilt.pool.revision}`,
            rebuilt.baseInvalidated
              ? 'base snapshot invalidated: the next start makes a fresh one'
              : 'base snapshot kept while instances run or sleep on it',
          ].join('\n'),
        );
      });
    });
  pool
    .command('destroy')
    .argument('<tenant/pool>')
    .option('--yes', 'destroy its instances without asking')
    .action(async (address: string, options, command: Command) => {
      const { tenant, pool: id } = parseAddress(address, 2);
      await withFleet(command, async (fleet, json) => {
        fleet.store.pool(tenant, id);
        await confirmDestroy(
          `pool ${address}`,
          fleet.store.listInstances({ tenant, pool: id }).length,
          options.yes,
        );
        await fleet.destroyPool(address);
        output(json, { destroyed: address }, () => `destroyed ${address}`);
      });
    });
}

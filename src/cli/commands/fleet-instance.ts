import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { ConfigError } from '../../errors.js';
import type { Fleet } from '../../fleet/fleet.js';
import { parseAddress } from '../../fleet/state/ids.js';
import type { Instance } from '../../fleet/state/model.js';
import { parseInput, timeoutMs } from '../../util/validate.js';
import { output, wholeOption, withFleet } from './fleet-common.js';

const line = (i: Instance) =>
  `${i.path}\t${i.state}\t${i.address}\t${i.mac}${i.reason ? `\t(${i.reason})` : ''}`;

export function registerInstanceCommands(fleet: Command): void {
  const instance = fleet
    .command('instance')
    .description('instances: create, run, pause, sleep, wake, destroy');
  instance
    .command('create')
    .argument('<tenant/pool>')
    .option('--id <id>', 'the instance id (default: random)')
    .action(async (address: string, options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        const created = await fleet.createInstance(address, options.id);
        output(
          json,
          { id: created.id, path: created.path, address: created.address, mac: created.mac },
          () => created.path,
        );
      });
    });
  instance
    .command('list')
    .argument('[tenant or tenant/pool]')
    .action(async (address: string | undefined, _options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        const [tenant, pool] = (address ?? '').split('/');
        if (tenant) parseAddress(address as string, pool === undefined ? 1 : 2);
        // An unknown tenant or pool is a mistake to name, not an empty list.
        if (tenant) fleet.store.tenant(tenant);
        if (tenant && pool !== undefined) fleet.store.pool(tenant, pool);
        const instances = fleet.store.listInstances({ tenant: tenant || undefined, pool });
        output(json, instances, () => instances.map(line).join('\n') || 'no instances');
      });
    });
  instance
    .command('info')
    .argument('<tenant/pool/instance>')
    .action(async (address: string, _options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        const info = fleet.instanceInfo(fleet.instance(address));
        output(json, info, () =>
          Object.entries(info)
            .filter(([, value]) => value !== undefined)
            .map(([key, value]) => `${key}: ${typeof value === 'object' ? JSON.stringify(value) : value}`)
            .join('\n'),
        );
      });
    });
  const operations = ['start', 'stop', 'warm', 'resume', 'sleep', 'wake'] as const;
  for (const name of operations) {
    instance
      .command(name)
      .argument('<tenant/pool/instance>')
      .action(async (address: string, _options, command: Command) => {
        await withFleet(command, async (fleet: Fleet, json) => {
          const done = await fleet[name](address);
          output(json, done, () => `${done.path} ${done.state}`);
        });
      });
  }
  instance
    .command('destroy')
    .argument('<tenant/pool/instance>')
    .action(async (address: string, _options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        await fleet.destroy(address);
        output(json, { destroyed: address }, () => `destroyed ${address}`);
      });
    });
  instance
    .command('exec')
    .description(
      "run a command in a Running instance, its output streamed as it comes; exits with the command's status",
    )
    .argument('<tenant/pool/instance>')
    .argument('<command...>')
    .option(
      '--timeout <ms>',
      'how long the command may run',
      (value) => parseInput(timeoutMs, wholeOption(value), '--timeout'),
      60_000,
    )
    .action(async (address: string, argv: string[], options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        // Live: output is written as the guest produces it (--json gathers it into one object).
        const stream = json
          ? undefined
          : {
              onStdout: (chunk: Buffer) => process.stdout.write(chunk),
              onStderr: (chunk: Buffer) => process.stderr.write(chunk),
            };
        const result = await fleet.exec(address, argv, options.timeout, stream);
        if (json) {
          output(
            json,
            {
              status: result.status,
              timedOut: result.timedOut,
              stdout: result.stdout.toString(),
              stderr: result.stderr.toString(),
            },
            () => '',
          );
        } else if (result.timedOut) {
          process.stderr.write(`vmkit: the command timed out after ${options.timeout} ms\n`);
        }
        process.exitCode = result.status;
      });
    });
  instance
    .command('shell')
    .description(
      'a root shell, line by line: each line runs as its own sh script; exits with the last status',
    )
    .argument('<tenant/pool/instance>')
    .option(
      '--timeout <ms>',
      'how long each line may run',
      (value) => parseInput(timeoutMs, wholeOption(value), '--timeout'),
      60_000,
    )
    .action(async (address: string, options, command: Command) => {
      await withFleet(command, async (fleet) => {
        const lines = createInterface({ input: process.stdin, terminal: false });
        const iterator = lines[Symbol.asyncIterator]();
        const prompt = () => {
          if (process.stdin.isTTY) process.stderr.write(`${address}# `);
        };
        let status = 0;
        prompt();
        await fleet.shell(
          address,
          async () => {
            const { value, done } = await iterator.next();
            return done || value.trim() === 'exit' ? undefined : value;
          },
          (_script, result) => {
            process.stdout.write(result.stdout);
            process.stderr.write(result.stderr);
            status = result.status;
            if (status !== 0 && process.stdin.isTTY) process.stderr.write(`(status ${status})\n`);
            prompt();
          },
          options.timeout,
        );
        lines.close();
        process.exitCode = status;
      });
    });
  const onOff = (value: string) => {
    if (value !== 'on' && value !== 'off')
      throw new ConfigError(`expected on or off, got ${JSON.stringify(value)}`);
    return value === 'on';
  };
  instance
    .command('set')
    .description('flags: pinned and critical instances are never put to sleep by the policy')
    .argument('<tenant/pool/instance>')
    .option('--pinned <on|off>', 'pinned', onOff)
    .option('--critical <on|off>', 'critical', onOff)
    .action(async (address: string, options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        const done = fleet.setFlags(address, { pinned: options.pinned, critical: options.critical });
        output(
          json,
          done,
          () => `${done.path} pinned ${done.pinned ? 'on' : 'off'}, critical ${done.critical ? 'on' : 'off'}`,
        );
      });
    });
  instance
    .command('logs')
    .description("the instance's serial console since its last boot")
    .argument('<tenant/pool/instance>')
    .action(async (address: string, _options, command: Command) => {
      await withFleet(command, async (fleet, json) => {
        const text = fleet.logs(address);
        output(json, { path: address, console: text }, () => text);
      });
    });
}

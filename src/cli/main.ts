#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { ZodType } from 'zod';
import { parseAccel } from '../backends/accel.js';
import { ConfigError, InterruptedError, VmkitError } from '../errors.js';
import { timeoutMs } from '../util/validate.js';
import { registerCacheCommands } from './commands/cache.js';
import { registerClusterCommands } from './commands/cluster.js';
import { registerFleetCommands } from './commands/fleet.js';
import { registerProjectCommands } from './commands/project.js';
import { registerReportCommands } from './commands/report.js';

// Command modules load when their command runs: a quick `vmkit exec` or `vmkit sync` does not pay
// for loading the test driver, the image builders and the rest.
const program = new Command('vmkit')
  .description('Real virtual machines for tests and sandboxes, driven from TypeScript')
  .version('0.1.0')
  .showHelpAfterError('(run vmkit --help for usage)')
  .exitOverride();

/** Parses an option value with the schema the API uses for the same field. */
const checked =
  <T>(schema: ZodType<T>, convert: (value: string) => unknown = (value) => value) =>
  (value: string): T => {
    const result = schema.safeParse(convert(value));
    if (result.success) return result.data;
    throw new InvalidArgumentError(result.error.issues[0]?.message ?? 'invalid');
  };
const milliseconds = checked(timeoutMs, (value) => (/^\d+$/.test(value) ? Number(value) : Number.NaN));
const accelOption = () =>
  new Option('--accel <accel>', 'accelerator: auto (KVM where it works), kvm or tcg').argParser((value) => {
    try {
      return parseAccel(value);
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
  });

program
  .command('run')
  .description('run a test script that exports default defineTest({...})')
  .argument('<script>', 'test script (.ts or .js)')
  .option('--keep', 'keep the state folder (console and QEMU logs) for inspection')
  .option('--timeout <ms>', "global timeout, overriding the script's own", milliseconds)
  .option('--console', "stream every machine's serial console and every command's output to the log")
  .option('--verbose', 'log every command, its output as the guest produces it, and how it ended')
  .option(
    '--fresh',
    'boot every machine for real and take setup snapshots again, instead of reusing the boot cache and cached setup snapshots',
  )
  .option('--output <dir>', 'where the events ledger, diagnostics and copies go (ctx.outputDir)')
  .option(
    '--capture',
    "write every VLAN's traffic to a pcap file in the output folder (default vmkit-output)",
  )
  .option('--junit <file>', 'write JUnit XML here (its folder must exist)')
  .option('--report <dir>', 'write a self-contained report.html into this folder')
  .option('--interactive', "start the script's machines and open a REPL with them in scope; no test runs")
  .option(
    '--debug-on-failure',
    'on the first failure keep the machines running and wait (vmkit attach reaches them)',
  )
  .option(
    '--debug-wait <ms>',
    'with --debug-on-failure: wait at most this long (default 600000)',
    milliseconds,
  )
  .option(
    '--grep <pattern>',
    'with tests: run only those whose name matches this regular expression',
    (value) => {
      try {
        return new RegExp(value);
      } catch (error) {
        throw new InvalidArgumentError((error as Error).message);
      }
    },
  )
  .option(
    '--shard <i/n>',
    'with tests: run only the i-th of n parts of them (after --grep); the n parts together hold every test once',
  )
  .option(
    '--timings <file>',
    'with --shard: balance the parts by the durations in this file (from --write-timings or vmkit report merge)',
  )
  .option('--write-timings <file>', "with tests: write each test's duration to this file (JSON) at the end")
  .addOption(accelOption())
  .option(
    '--backend <name>',
    'run every machine on this backend: qemu, or mock (no VMM: answers from a script)',
  )
  .option(
    '--mock-script <file>',
    'with --backend mock: the commands its machines expect and their answers (JSON or YAML)',
  )
  .action(async (script: string, options) => {
    const { runCommand } = await import('./commands/run.js');
    process.exitCode = await runCommand(script, options);
  });

program
  .command('attach')
  .description('a root shell (or the serial console) of a machine kept by --debug-on-failure')
  .argument('<run>', 'the run id printed by the waiting run')
  .argument('<machine>', 'machine name')
  .option('--console', 'attach to the serial console instead of a root shell')
  .action(async (run: string, machine: string, options: { console?: boolean }) => {
    const { attachCommand } = await import('./commands/attach.js');
    process.exitCode = await attachCommand(run, machine, options);
  });

const image = program.command('image').description('build and list guest images');
image
  .command('build')
  .description('build an image from Debian packages (cached; rebuilt only when an input changes)')
  .argument(
    '[name]',
    'image name (tiny, debian), or a recipe file: a .json of { base, packages, files, run, name }',
    'tiny',
  )
  .action(async (name: string) => {
    const { buildImageCommand } = await import('./commands/image.js');
    await buildImageCommand(name);
  });
image
  .command('list')
  .description('list cached images')
  .action(async () => {
    const { listImagesCommand } = await import('./commands/image.js');
    await listImagesCommand();
  });

const snapshot = program
  .command('snapshot')
  .description('project VM snapshots (save, restore) and the machine snapshot store (list, rm, prune)');
snapshot
  .command('list')
  .description('list snapshots, newest first, and whether this host can restore them')
  .action(async () => {
    const { listSnapshotsCommand } = await import('./commands/snapshot.js');
    await listSnapshotsCommand();
  });
snapshot
  .command('rm')
  .description('remove snapshots by id or name')
  .argument('<ids...>', 'snapshot ids or names')
  .action(async (ids: string[]) => {
    const { removeSnapshotsCommand } = await import('./commands/snapshot.js');
    await removeSnapshotsCommand(ids);
  });
snapshot
  .command('prune')
  .description('remove snapshots this host cannot restore (other QEMU version, image gone)')
  .option('--all', 'remove every snapshot')
  .action(async (options: { all?: boolean }) => {
    const { pruneSnapshotsCommand } = await import('./commands/snapshot.js');
    await pruneSnapshotsCommand(options);
  });

program
  .command('doctor')
  .description('check QEMU, KVM, tools, user namespaces, subordinate ids, cgroups and the image cache')
  .option('--json', 'print the checks as JSON')
  .action(async (options: { json?: boolean }) => {
    const { doctor } = await import('./commands/doctor.js');
    process.exitCode = await doctor({ json: Boolean(options.json) });
  });

registerFleetCommands(program);
registerClusterCommands(program);
registerProjectCommands(program, snapshot);
registerReportCommands(program);
const cache = registerCacheCommands(program);
cache
  .command('ls')
  .description(
    'list the boot cache: the saved first boot of each machine configuration, most recently used first',
  )
  .option('--json', 'print the entries as JSON')
  .action(async (options: { json?: boolean }) => {
    const { listBootCacheCommand } = await import('./commands/boot-cache.js');
    await listBootCacheCommand(Boolean(options.json));
  });
cache
  .command('prune')
  .description(
    'remove boot cache entries this host cannot restore (another QEMU, image gone, damaged), then the least recently used beyond the size cap',
  )
  .option('--max-mib <mib>', 'the size cap for this prune (default: VMKIT_BOOT_CACHE_MIB, else 4096)')
  .action(async (options: { maxMib?: string }) => {
    const { pruneBootCacheCommand } = await import('./commands/boot-cache.js');
    await pruneBootCacheCommand(options.maxMib);
  });
cache
  .command('clear')
  .description('remove every boot cache entry (the next start of each configuration boots again)')
  .action(async () => {
    const { clearBootCacheCommand } = await import('./commands/boot-cache.js');
    await clearBootCacheCommand();
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // Help and version exit 0; usage errors were already printed by commander.
    process.exitCode = error.exitCode === 0 ? 0 : 2;
  } else if (error instanceof InterruptedError) {
    process.stderr.write(`vmkit: ${error.message}\n`);
    // What was begun is undone; work still winding down (waits, timers) is not waited for.
    process.exit(error.exitCode);
  } else if (error instanceof VmkitError) {
    process.stderr.write(`vmkit: ${error.message}\n`);
    // 2 is for bad input only (also when the fleet agent refused the request's input: 400, 404,
    // 413); a failed build, a missing QEMU or a refused transition (409) is a failure.
    const rejectedInput = [400, 404, 413].includes((error as { statusCode?: number }).statusCode ?? 0);
    process.exitCode = error instanceof ConfigError || rejectedInput ? 2 : 1;
  } else if (typeof (error as NodeJS.ErrnoException)?.syscall === 'string') {
    // A system call vmkit did not expect to fail (EACCES, ENOSPC...): its message says it all.
    process.stderr.write(`vmkit: ${(error as Error).message}\n`);
    process.exitCode = 1;
  } else {
    process.stderr.write(`vmkit: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exitCode = 1;
  }
}

import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { ConfigError } from '../../errors.js';
import { settleInterrupted } from '../../project/api.js';
import { loadProjectConfig, selectVm } from '../../project/config.js';
import { commandScript, namedCommandScript, streamCommand } from '../../project/exec.js';
import { STARTER_JSON, STARTER_TS } from '../../project/starter.js';
import type { SyncReport } from '../../project/sync.js';
import { type SyncMethod, syncVm } from '../../project/sync-vm.js';
import { type ProjectVm, projectVm, withHub } from '../../project/vm-handle.js';
import { Runtime } from '../../runtime/runtime.js';

const say = (line: string) => process.stderr.write(`${line}\n`);
// Loaded by the commands that need them, so that exec and sync start quickly.
const lifecycle = () => import('../../project/lifecycle.js');
const snapshots = () => import('../../project/snapshots.js');

/** Settles an operation of the VM cut off by a kill (loaded only when one was recorded). */
const repaired = (pvm: ProjectVm) => settleInterrupted(pvm, say);

/** The VM named (or the default one), an operation of it cut off by a kill settled first. */
export async function openVm(name: string | undefined): Promise<ProjectVm> {
  const config = await loadProjectConfig();
  return repaired(projectVm(config, selectVm(config, name), new Runtime()));
}

const describeSync = (report: SyncReport, method: string, ms: number) =>
  `sync ${report.guest} (${method}): ${report.sent} sent (${(report.bytes / 1024).toFixed(1)} KiB), ${report.deleted} deleted, ${report.unchanged} unchanged in ${ms} ms` +
  (report.sent + report.deleted > 0 ? `\n  ${report.sample.join('\n  ')}` : '');

const SYNC_METHODS = ['vmkit', 'rsync', 'auto'] as const;

async function syncAll(pvm: ProjectVm, options: { full?: boolean; method?: string } = {}): Promise<void> {
  const method = options.method;
  if (method !== undefined && !(SYNC_METHODS as readonly string[]).includes(method)) {
    throw new ConfigError(
      `sync: --method must be ${SYNC_METHODS.join(', ')} (got ${JSON.stringify(method)})`,
    );
  }
  await withHub(pvm, (hub) =>
    syncVm(hub, pvm, { full: options.full, method: method as SyncMethod | undefined }, (report, used, ms) =>
      say(describeSync(report, used, ms)),
    ),
  );
}

async function runNamed(pvm: ProjectVm, command: string): Promise<number> {
  const spec = pvm.vm.commands[command];
  if (!spec) {
    throw new ConfigError(
      `VM ${pvm.vm.name} has no command ${JSON.stringify(command)} (it has: ${Object.keys(pvm.vm.commands).join(', ') || 'none'})`,
    );
  }
  await syncAll(pvm);
  say(`run ${command}: ${spec.run}`);
  return withHub(pvm, (hub) =>
    streamCommand(hub, namedCommandScript(spec, pvm.vm.workdir), {
      stdin: process.stdin,
      forwardSignals: true,
    }),
  );
}

async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await prompt.question(`${question} [y/N] `)).trim());
  } finally {
    prompt.close();
  }
}

/**
 * `[name] -- cmd args...`: the words before `--` name the VM; without `--`, all is the command
 * (for ssh, with `commandOptional`, the one word is the VM's name and there is no command).
 */
export function splitAtDashes(
  words: string[],
  options: { what?: string; commandOptional?: boolean } = {},
): { name?: string; command: string[] } {
  const what = options.what ?? 'exec';
  const dashes = words.indexOf('--');
  if (dashes < 0) {
    if (!options.commandOptional) return { command: words };
    if (words.length > 1)
      throw new ConfigError(
        `${what}: expected [name] [-- command], got ${words.join(' ')} (put -- before the command)`,
      );
    return { name: words[0], command: [] };
  }
  if (dashes > 1)
    throw new ConfigError(
      `${what}: expected [name] -- command, got ${words.slice(0, dashes).join(' ')} before --`,
    );
  if (dashes === words.length - 1 && !options.commandOptional)
    throw new ConfigError(`${what}: no command after --`);
  return { name: words[0] === '--' ? undefined : words[0], command: words.slice(dashes + 1) };
}

export function registerProjectCommands(program: Command, snapshot: Command): void {
  program
    .command('init')
    .description('write a commented starter vmkit.config.ts here (or vmkit.config.json with --json)')
    .option('--json', 'write vmkit.config.json (no comments) instead')
    .action((options: { json?: boolean }) => {
      const file = join(process.cwd(), options.json ? 'vmkit.config.json' : 'vmkit.config.ts');
      for (const existing of ['vmkit.config.ts', 'vmkit.config.json']) {
        if (existsSync(join(process.cwd(), existing)))
          throw new ConfigError(`${existing} exists already here`);
      }
      writeFileSync(file, options.json ? STARTER_JSON : STARTER_TS);
      say(`wrote ${file}; next: vmkit up`);
    });

  program
    .command('up')
    .description("start the project's VM in the background and return when it is ready")
    .argument('[name]', 'VM name (default: the default VM)')
    .option('--fresh', "boot a new VM for real instead of restoring the boot cache's saved boot")
    .action(async (name: string | undefined, options: { fresh?: boolean }) => {
      const pvm = await openVm(name);
      const result = await (await lifecycle()).up(pvm, say, { fresh: options.fresh === true });
      const how = [
        `${(result.bootMs / 1000).toFixed(1)} s`,
        ...(result.fromBootCache ? ['from the boot cache'] : []),
        ...(result.recovered ? ['recovered after QEMU died'] : []),
      ];
      say(result.already ? `VM ${pvm.vm.name} is already up` : `VM ${pvm.vm.name} is up (${how.join(', ')})`);
    });

  program
    .command('down')
    .description('stop the VM cleanly (its disks are kept)')
    .argument('[name]', 'VM name')
    .action(async (name?: string) => {
      const pvm = await openVm(name);
      say(
        (await (await lifecycle()).down(pvm))
          ? `VM ${pvm.vm.name} stopped`
          : `VM ${pvm.vm.name} was not running`,
      );
    });

  program
    .command('destroy')
    .description('stop the VM and remove its disks, snapshots and state')
    .argument('[name]', 'VM name')
    .option('--yes', 'do not ask')
    .action(async (name: string | undefined, options: { yes?: boolean }) => {
      const pvm = await openVm(name);
      if (!options.yes && !(await confirm(`remove VM ${pvm.vm.name} and its disks?`))) {
        throw new ConfigError(`not destroying ${pvm.vm.name}: confirm at the prompt or pass --yes`);
      }
      await (await lifecycle()).destroy(pvm);
      say(`VM ${pvm.vm.name} destroyed`);
    });

  program
    .command('status')
    .description('state, uptime, ports, disk use and snapshots of each VM of the project')
    .argument('[name]', 'only this VM')
    .option('--json', 'print JSON')
    .action(async (name: string | undefined, options: { json?: boolean }) => {
      const { formatStatus, vmStatus } = await import('../../project/status.js');
      const config = await loadProjectConfig();
      const names = name ? [selectVm(config, name).name] : Object.keys(config.vms);
      const runtime = new Runtime();
      for (const vm of names) await repaired(projectVm(config, selectVm(config, vm), runtime));
      const statuses = names.map((vm) => vmStatus(config, vm));
      process.stdout.write(
        options.json
          ? `${JSON.stringify(statuses, null, 2)}\n`
          : `${statuses.map(formatStatus).join('\n')}\n`,
      );
    });

  program
    .command('exec')
    .description(
      'run a command as root in the VM, in its working folder; output streams, the exit code propagates',
    )
    .argument('<words...>', '[name] -- command args...')
    .allowUnknownOption()
    .action(async () => {
      const { name, command } = splitAtDashes(process.argv.slice(process.argv.indexOf('exec') + 1));
      const pvm = await openVm(name);
      process.exitCode = await withHub(pvm, (hub) =>
        streamCommand(hub, commandScript(command, pvm.vm.workdir), {
          stdin: process.stdin,
          forwardSignals: true,
        }),
      );
    });

  program
    .command('shell')
    .description('an interactive root shell in the VM on a pseudo-terminal (raw mode, window size)')
    .argument('[name]', 'VM name')
    .action(async (name?: string) => {
      const pvm = await openVm(name);
      const { installPtyHelper, ptyHelper, ptyScript, terminalInput } = await import('../../project/pty.js');
      const binary = await ptyHelper();
      process.exitCode = await withHub(pvm, async (hub) => {
        if (!binary) {
          say('vmkit: no C compiler on this host to build the PTY helper: a line-mode shell (no PTY)');
          return streamCommand(hub, `cd ${pvm.vm.workdir} 2>/dev/null; exec sh -i 2>&1`, {
            stdin: process.stdin,
          });
        }
        const helper = await installPtyHelper(hub, binary);
        const terminal = terminalInput();
        try {
          return await streamCommand(hub, ptyScript(helper, pvm.vm.workdir), { stdin: terminal.input });
        } finally {
          terminal.restore();
        }
      });
    });

  program
    .command('ssh')
    .description(
      "real OpenSSH into the VM as root, with vmkit's key, on the forwarded port; with -- cmd, runs it (needs an sshd in the image)",
    )
    .argument('[words...]', '[name] [-- command...]')
    .allowUnknownOption()
    .action(async () => {
      const { name, command } = splitAtDashes(process.argv.slice(process.argv.indexOf('ssh') + 1), {
        what: 'ssh',
        commandOptional: true,
      });
      const { sshCommand } = await import('./project-ssh.js');
      process.exitCode = await sshCommand(await openVm(name), command);
    });

  program
    .command('ssh-config')
    .description('print an OpenSSH config for the VM (for ssh -F, rsync -e, editors) and make it ready')
    .argument('[name]', 'VM name')
    .action(async (name?: string) => {
      const { sshConfigCommand } = await import('./project-ssh.js');
      process.stdout.write(await sshConfigCommand(await openVm(name)));
    });

  program
    .command('sync')
    .description('copy the project tree into the VM: changed files only, deletions too')
    .argument('[name]', 'VM name')
    .option('--full', "vmkit's own transfer: send everything again (after changes made inside the guest)")
    .option(
      '--method <method>',
      "vmkit, rsync (over SSH) or auto (rsync where both sides have it); default: the config's syncMethod, else vmkit",
    )
    .action(async (name: string | undefined, options: { full?: boolean; method?: string }) => {
      await syncAll(await openVm(name), options);
    });

  program
    .command('run-cmd')
    .description('sync, then run a named command from the config, streaming')
    .argument('<command>', 'command name')
    .argument('[name]', 'VM name')
    .action(async (command: string, name?: string) => {
      process.exitCode = await runNamed(await openVm(name), command);
    });

  program
    .command('test')
    .description('sync, then run the "test" command')
    .argument('[name]', 'VM name')
    .action(async (name?: string) => {
      process.exitCode = await runNamed(await openVm(name), 'test');
    });

  program
    .command('quick')
    .description('sync, then run the default command')
    .argument('[name]', 'VM name')
    .action(async (name?: string) => {
      const pvm = await openVm(name);
      const command =
        pvm.vm.defaultCommand ?? (pvm.vm.commands.test ? 'test' : Object.keys(pvm.vm.commands)[0]);
      if (!command) throw new ConfigError(`VM ${pvm.vm.name} has no commands in ${pvm.project.file}`);
      process.exitCode = await runNamed(pvm, command);
    });

  program
    .command('provision')
    .description('run the provision commands again now, then save the clean snapshot')
    .argument('[name]', 'VM name')
    .action(async (name?: string) => {
      await (await lifecycle()).reprovision(await openVm(name), say);
    });

  program
    .command('reset')
    .description('restore the snapshot labelled "clean" (vmkit saves it after provisioning)')
    .argument('[name]', 'VM name')
    .action(async (name?: string) => {
      const pvm = await openVm(name);
      const { restoreMs } = await (await snapshots()).restoreSnapshot(pvm, 'clean');
      say(`VM ${pvm.vm.name} reset to clean in ${(restoreMs / 1000).toFixed(2)} s`);
    });

  snapshot
    .command('save')
    .description("save the project VM's RAM and disks under a label")
    .argument('<label>', 'label, e.g. clean')
    .argument('[name]', 'VM name')
    .action(async (label: string, name?: string) => {
      const pvm = await openVm(name);
      const saved = await (await snapshots()).saveSnapshot(pvm, label);
      say(`saved snapshot ${label} of ${pvm.vm.name} (${(saved.bytes / 1048576).toFixed(1)} MiB)`);
    });
  snapshot
    .command('restore')
    .description('return the project VM to a saved label')
    .argument('<label>', 'label')
    .argument('[name]', 'VM name')
    .action(async (label: string, name?: string) => {
      const pvm = await openVm(name);
      const { restoreMs } = await (await snapshots()).restoreSnapshot(pvm, label);
      say(`VM ${pvm.vm.name} restored to ${label} in ${(restoreMs / 1000).toFixed(2)} s`);
    });
}

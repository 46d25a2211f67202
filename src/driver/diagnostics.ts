import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Machine } from '../machine/machine.js';
import { ensureDir } from '../util/files.js';
import { withTimeout } from '../util/time.js';

/** Each item is collected within this, so a wedged guest cannot hold the bundle. */
const ITEM_MS = 5000;
const ITEM_BYTES = 256 * 1024;

const GUEST_ITEMS: Array<[file: string, command: string]> = [
  ['dmesg.txt', 'dmesg'],
  ['ps.txt', 'ps -ef 2>/dev/null || ps'],
  ['systemctl-failed.txt', 'command -v systemctl >/dev/null && systemctl --failed --no-pager'],
  ['systemctl-jobs.txt', 'command -v systemctl >/dev/null && systemctl list-jobs --no-pager'],
  ['journal-tail.txt', 'command -v journalctl >/dev/null && journalctl -n 300 --no-pager'],
];

/**
 * Through a console shell, dmesg's "[  12.345678]" stamps would make its lines look like kernel
 * messages, which the console leaves out of command output: they become "(12.345678)".
 */
const CONSOLE_VARIANTS: Record<string, string> = {
  dmesg: "dmesg | sed 's/^\\[ *\\([0-9.]*\\)\\]/(\\1)/'",
};

const cut = (text: string) => (text.length > ITEM_BYTES ? `[... cut ...]\n${text.slice(-ITEM_BYTES)}` : text);

/**
 * A diagnostics bundle for a machine in `<dir>/<machine>/`: its console (raw and cleaned), the
 * console transcript (what was typed and printed, with times), the QEMU log, its configuration,
 * and from inside the guest (through the backdoor, or a console shell without one) dmesg, the
 * process list and, on systemd guests, failed units, jobs and the journal tail. Every item is bounded in time and
 * size; one that cannot be collected says why in its file. Returns the files written.
 */
export async function collectDiagnostics(machine: Machine, dir: string): Promise<string[]> {
  const target = join(dir, machine.name);
  await ensureDir(target);
  const written: string[] = [];
  const put = async (file: string, text: string) => {
    await writeFile(join(target, file), cut(text));
    written.push(file);
  };
  await put('console.txt', machine.getConsoleLog());
  for (const [file, source] of [
    ['console.raw.log', 'console.log'],
    ['qemu.log', 'qemu.log'],
  ] as const) {
    await copyFile(join(machine.stateDir, source), join(target, file)).then(
      () => written.push(file),
      (error: Error) => put(file, `not available: ${error.message}\n`),
    );
  }
  await put('config.json', `${JSON.stringify(machine.config, null, 2)}\n`);
  await put('transcript.txt', machine.console.transcript.format(ITEM_BYTES));
  const run = guestRunner(machine);
  // One after another: the guest runs one command at a time, and each has its own bound.
  for (const [file, command] of GUEST_ITEMS) {
    await (async () => {
      if (typeof run === 'string') return put(file, `not collected: ${run}\n`);
      const text = await withTimeout(run(command), ITEM_MS + 1000, file)
        .then((result) =>
          result.exitCode === 0 || result.stdout
            ? result.stdout + result.stderr
            : `not available on this guest (exit ${result.exitCode}) ${result.stderr}`,
        )
        .catch((error: Error) => `not collected: ${error.message.split('\n')[0]}\n`);
      if (file.startsWith('systemctl') || file.startsWith('journal')) {
        if (text.startsWith('not available')) return; // not a systemd guest
      }
      await put(file, text);
    })();
  }
  return written;
}

type GuestRun = (command: string) => Promise<{ exitCode: number; stdout: string; stderr: string }>;

/**
 * How to run the diagnostics' commands in the guest: its backdoor, or without one the shell open
 * on its serial console (stdout and stderr merged there). A string says why neither can be used.
 */
function guestRunner(machine: Machine): GuestRun | string {
  if (!machine.isRunning) return 'the machine is not running';
  if (machine.config.backdoor !== false) return (command) => machine.execute(command, { timeoutMs: ITEM_MS });
  const shell = machine.console.shell;
  if (!shell) return 'the machine has no backdoor and no console shell was opened';
  return async (command) => ({
    ...(await shell.execute(CONSOLE_VARIANTS[command] ?? command, { timeoutMs: ITEM_MS })),
    stderr: '',
  });
}

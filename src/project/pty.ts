import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { GuestSetupError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { cacheDir, guestFilesDir } from '../util/paths.js';
import { ensurePrivateDir } from '../util/private.js';
import { shellQuote } from '../util/shell.js';
import { which } from '../util/which.js';
import type { HubClient } from './hub-client.js';

/** Where the guest keeps the PTY helper (a RAM folder on the tiny image: uploaded once per boot). */
const GUEST_HELPER = '/run/vmkit-pty';
const source = () => join(guestFilesDir(), 'project', 'pty.c');

/**
 * The PTY helper (guest/project/pty.c) built static on the host, cached by its source's hash;
 * undefined when the host has no C compiler (then `vmkit shell` falls back to line mode).
 */
export async function ptyHelper(): Promise<string | undefined> {
  const code = readFileSync(source());
  const binary = join(
    cacheDir(),
    'tools',
    `vmkit-pty-${createHash('sha256').update(code).digest('hex').slice(0, 12)}`,
  );
  if (existsSync(binary)) return binary;
  const compiler = (await which('musl-gcc')) ?? (await which('gcc'));
  if (!compiler) return undefined;
  ensurePrivateDir(join(cacheDir(), 'tools')); // the helper runs as root in guests
  const partial = `${binary}.${process.pid}.part`;
  await runTool(compiler, ['-static', '-Os', '-o', partial, source()]);
  renameSync(partial, binary);
  return binary;
}

/** Puts the helper into the guest unless it is there already; returns its guest path. */
export async function installPtyHelper(hub: HubClient, binary: string): Promise<string> {
  const present = await hub.run(`test -x ${GUEST_HELPER}`, 10_000);
  if (present.status === 0) return GUEST_HELPER;
  const result = await hub.request({
    type: 'upload',
    hostPath: binary,
    guestPath: GUEST_HELPER,
    timeoutMs: 60_000,
  });
  if (result.status !== 0)
    throw new GuestSetupError(`installing the PTY helper failed: ${result.stderr.toString().trim()}`);
  await hub.succeed(`chmod 755 ${GUEST_HELPER}`, 10_000);
  return GUEST_HELPER;
}

/** The sequence the helper reads as a window size. */
export const windowSizeSequence = (rows: number, columns: number) => `\u001b]777;W;${rows};${columns}\u0007`;

/**
 * The host terminal joined to the guest's: raw mode while it lasts, keystrokes as they are
 * typed, and the window size now and whenever it changes. `restore` puts the terminal back.
 */
export function terminalInput(): { input: PassThrough; restore: () => void } {
  const input = new PassThrough();
  const stdin = process.stdin;
  const stdout = process.stdout;
  const sendSize = () => {
    if (stdout.isTTY) input.write(windowSizeSequence(stdout.rows, stdout.columns));
  };
  sendSize();
  if (stdin.isTTY) stdin.setRawMode(true);
  const forward = (chunk: Buffer) => input.write(chunk);
  stdin.on('data', forward);
  stdin.once('end', () => input.end());
  stdout.on('resize', sendSize);
  return {
    input,
    restore: () => {
      stdin.off('data', forward);
      stdout.off('resize', sendSize);
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
    },
  };
}

/** The script that runs the helper in `cwd` with the host's TERM. */
export function ptyScript(helper: string, cwd: string): string {
  const term = process.env.TERM && /^[\w.+-]+$/.test(process.env.TERM) ? process.env.TERM : 'xterm-256color';
  return `cd ${shellQuote(cwd)} 2>/dev/null; TERM=${term} exec ${helper}`;
}

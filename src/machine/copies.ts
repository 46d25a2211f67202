import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ConfigError, TransferError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { ensureDir } from '../util/files.js';
import { shellQuote } from '../util/shell.js';
import { withTimeout } from '../util/time.js';
import { type LeftOut, unpackUntrusted } from '../util/untrusted-archive.js';
import { checkCall } from './calls.js';
import type { CommandOptions } from './commands.js';
import type { MachineInternals } from './internals.js';

type Succeed = (command: string, options: { timeoutMs?: number }) => Promise<string>;

/**
 * Copies a host file or folder into the guest. A folder travels as one tar archive in one
 * checksummed frame and is unpacked with its modes; a file lands whole or not at all.
 */
export async function copyIn(
  internals: MachineInternals,
  succeed: Succeed,
  hostPath: string,
  guestPath: string,
  options: { timeoutMs?: number },
): Promise<void> {
  const checked = checkCall('copyToVm', { hostPath, guestPath, options });
  // Default: twice the machine's command timeout.
  const timeoutMs = checked.timeoutMs ?? internals.commandTimeoutMs * 2;
  const failed = (why: string) =>
    new TransferError(`copying ${hostPath} to ${internals.name}:${guestPath} failed: ${why}`);
  const info = await stat(hostPath).catch(() => undefined);
  if (!info?.isDirectory()) {
    await succeed(`mkdir -p ${shellQuote(dirname(guestPath))}`, {});
    const result = await internals.agent.upload(hostPath, guestPath, timeoutMs);
    if (result.status !== 0) throw failed(result.stderr.toString().trim());
    return;
  }
  const scratch = await mkdtemp(join(tmpdir(), 'vmkit-copy-'));
  const archive = join(scratch, 'folder.tar');
  const guestArchive = `/tmp/vmkit-copy-${randomBytes(4).toString('hex')}.tar`;
  try {
    await runTool('tar', ['-C', hostPath, '-cf', archive, '.'], { timeoutMs }).catch((error: Error) => {
      throw failed(error.message);
    });
    const result = await internals.agent.upload(archive, guestArchive, timeoutMs);
    if (result.status !== 0) throw failed(result.stderr.toString().trim());
    const target = shellQuote(guestPath);
    await succeed(
      `mkdir -p ${target} && tar -xf ${guestArchive} -C ${target}; s=$?; rm -f ${guestArchive}; exit $s`,
      {
        timeoutMs,
      },
    ).catch((error: Error) => {
      throw failed(error.message);
    });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

export interface CopyFromVmOptions extends CommandOptions {
  /**
   * Keep the guest's numeric owners and setuid, setgid and sticky bits. Needs root on the host
   * (ConfigError otherwise). Device nodes and anything outside the target are left out even so.
   */
  keepOwnership?: boolean;
}

export interface CopyReport {
  /** What the guest's folder held that the host does not take from a guest (also logged). */
  skipped: LeftOut[];
}

/**
 * Copies a guest file or folder to the host. A folder travels as one tar archive and is unpacked
 * as untrusted input (`unpackUntrusted`): the host user owns what is written, permission bits are
 * kept without setuid, setgid or sticky bits, and device nodes, FIFOs and names or links leading
 * out of the target are left out, reported in the log and the result. One file is written as a
 * new file owned by the host user and renamed into place (a link at `hostPath` is replaced).
 */
export async function copyOut(
  internals: MachineInternals,
  succeed: Succeed,
  guestPath: string,
  hostPath: string,
  options: { timeoutMs?: number; keepOwnership?: boolean },
): Promise<CopyReport> {
  checkCall('copyFromVm', { hostPath, guestPath, copyOptions: options });
  const { timeoutMs = internals.commandTimeoutMs * 2, keepOwnership = false } = options;
  const failed = (why: string) =>
    new TransferError(`copying ${internals.name}:${guestPath} to ${hostPath} failed: ${why}`);
  if (keepOwnership && process.getuid?.() !== 0) {
    throw new ConfigError(
      `copyFromVm: keepOwnership needs root on the host (only root can give files to other owners); without it the files are yours`,
    );
  }
  const parent = dirname(hostPath);
  await withTimeout(ensureDir(parent), timeoutMs, `creating ${parent}`).catch((error: Error) => {
    throw failed(error.message);
  });
  const source = shellQuote(guestPath);
  const probe = keepOwnership ? `else stat -L -c '%u %g %a' ${source} 2>/dev/null; ` : '';
  const kind = (await succeed(`if [ -d ${source} ]; then echo folder; ${probe}fi`, {})).trim();
  if (kind !== 'folder') {
    const result = await internals.agent.download(guestPath, hostPath, timeoutMs);
    if (result.status !== 0) throw failed(result.stderr.toString().trim());
    if (keepOwnership)
      await keepOwner(hostPath, kind).catch((error: Error) => {
        throw failed(error.message);
      });
    return { skipped: [] };
  }
  const guestArchive = `/tmp/vmkit-copy-${randomBytes(4).toString('hex')}.tar`;
  const scratch = await mkdtemp(join(tmpdir(), 'vmkit-copy-'));
  const archive = join(scratch, 'folder.tar');
  try {
    // tar leaves sockets out and says so on stderr (GNU and busybox alike): they are reported too.
    const packing = await succeed(`tar -cf ${guestArchive} -C ${source} . 2>&1`, { timeoutMs }).catch(
      (error: Error) => {
        throw failed(error.message);
      },
    );
    const sockets = [...packing.matchAll(/^tar: (.+): socket ignored$/gm)].map((match) => ({
      path: (match[1] as string).replace(/^(\.\/)+/, ''),
      reason: 'a socket: not created',
    }));
    const result = await internals.agent.download(guestArchive, archive, timeoutMs);
    if (result.status !== 0) throw failed(result.stderr.toString().trim());
    await ensureDir(hostPath);
    const unpacked = await withTimeout(
      unpackUntrusted(archive, hostPath, { keepOwnership }),
      timeoutMs,
      `unpacking ${guestPath} into ${hostPath}`,
    ).catch((error: Error) => {
      throw failed(error.message);
    });
    const skipped = [...sockets, ...unpacked.skipped];
    if (skipped.length > 0) {
      internals.log(
        `copyFromVm ${guestPath}: left out what a guest may not put on the host: ${listed(skipped)}`,
      );
    }
    if (unpacked.failed.length > 0) throw failed(listed(unpacked.failed));
    return { skipped };
  } finally {
    await succeed(`rm -f ${guestArchive}`, {}).catch(() => {});
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Gives the file just written the guest file's owner and mode (`uid gid octal-mode`), owner first. */
async function keepOwner(hostPath: string, guestStat: string): Promise<void> {
  const [uid, gid, mode] = guestStat
    .split(' ')
    .map((field, index) => Number.parseInt(field, index === 2 ? 8 : 10));
  if (![uid, gid, mode].every((n) => Number.isInteger(n)))
    throw new TransferError(`unreadable guest stat ${JSON.stringify(guestStat)}`);
  const file = await open(hostPath, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    await file.chown(uid as number, gid as number);
    await file.chmod((mode as number) & 0o7777);
  } finally {
    await file.close();
  }
}

const listed = (entries: LeftOut[]) =>
  entries
    .slice(0, 20)
    .map((entry) => `${entry.path} (${entry.reason})`)
    .join(', ') + (entries.length > 20 ? ` and ${entries.length - 20} more` : '');

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { TransferError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { ensureDir } from '../util/files.js';
import { shellQuote } from '../util/shell.js';
import { withTimeout } from '../util/time.js';
import type { MachineInternals } from './machine.js';

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
  timeoutMs: number,
): Promise<void> {
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

/** Copies a guest file or folder to the host (a folder as one tar archive, modes kept). */
export async function copyOut(
  internals: MachineInternals,
  succeed: Succeed,
  guestPath: string,
  hostPath: string,
  timeoutMs: number,
): Promise<void> {
  const failed = (why: string) =>
    new TransferError(`copying ${internals.name}:${guestPath} to ${hostPath} failed: ${why}`);
  const parent = dirname(hostPath);
  await withTimeout(ensureDir(parent), timeoutMs, `creating ${parent}`).catch((error: Error) => {
    throw failed(error.message);
  });
  const source = shellQuote(guestPath);
  const isFolder = (await succeed(`if [ -d ${source} ]; then echo folder; fi`, {})).trim() === 'folder';
  if (!isFolder) {
    const result = await internals.agent.download(guestPath, hostPath, timeoutMs);
    if (result.status !== 0) throw failed(result.stderr.toString().trim());
    return;
  }
  const guestArchive = `/tmp/vmkit-copy-${randomBytes(4).toString('hex')}.tar`;
  const scratch = await mkdtemp(join(tmpdir(), 'vmkit-copy-'));
  const archive = join(scratch, 'folder.tar');
  try {
    await succeed(`tar -cf ${guestArchive} -C ${source} .`, { timeoutMs }).catch((error: Error) => {
      throw failed(error.message);
    });
    const result = await internals.agent.download(guestArchive, archive, timeoutMs);
    if (result.status !== 0) throw failed(result.stderr.toString().trim());
    await ensureDir(hostPath);
    await runTool('tar', ['-xpf', archive, '-C', hostPath], { timeoutMs }).catch((error: Error) => {
      throw failed(error.message);
    });
  } finally {
    await succeed(`rm -f ${guestArchive}`, {}).catch(() => {});
    await rm(scratch, { recursive: true, force: true });
  }
}

import { closeSync, constants, openSync, readSync } from 'node:fs';
import { ImageError } from '../errors.js';
import { runTool } from './exec.js';

/**
 * Creates a qcow2 image: blank of `sizeMiB`, or a copy-on-write overlay on `base` (whose format
 * is `baseFormat`, qcow2 unless said), as large as the base unless `sizeMiB` is given.
 */
export async function createQcow2(
  path: string,
  options: { sizeMiB?: number; base?: string; baseFormat?: string },
): Promise<void> {
  const base = options.base ? ['-F', options.baseFormat ?? 'qcow2', '-b', options.base] : [];
  const size = options.sizeMiB !== undefined ? [`${options.sizeMiB}M`] : [];
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', ...base, path, ...size]);
}

/**
 * Throws unless `path` is a qcow2 image that stands alone: no backing file and no external data
 * file, so that opening it reads nothing else of the host (a disk that came from elsewhere).
 */
export function checkStandaloneQcow2(path: string, what: string): void {
  const header = Buffer.alloc(80);
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const read = readSync(fd, header, 0, header.length, 0);
    const refuse = (why: string) => {
      throw new ImageError(`${what} ${path}: ${why}`);
    };
    if (read < 72 || header.readUInt32BE(0) !== 0x514649fb) refuse('not a qcow2 image');
    if (header.readBigUInt64BE(8) !== 0n) refuse('it names a backing file');
    const version = header.readUInt32BE(4);
    // Version 3 headers: incompatible feature bit 2 is an external data file.
    if (version >= 3 && (header.readBigUInt64BE(72) & 4n) !== 0n) refuse('it names an external data file');
  } finally {
    closeSync(fd);
  }
}

/** The backing file a qcow2 image names (as written in its header), undefined when it names none. */
export function qcow2BackingFile(path: string): string | undefined {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const header = Buffer.alloc(20);
    if (readSync(fd, header, 0, 20, 0) < 20 || header.readUInt32BE(0) !== 0x514649fb)
      throw new ImageError(`${path}: not a qcow2 image`);
    const offset = header.readBigUInt64BE(8);
    const length = header.readUInt32BE(16);
    if (offset === 0n) return undefined;
    if (length > 1023) throw new ImageError(`${path}: its backing file name is ${length} bytes long`);
    const name = Buffer.alloc(length);
    readSync(fd, name, 0, length, Number(offset));
    return name.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Writes the whole disk that `from` and its backing chain make into `to`, a qcow2 image of its own. */
export async function flattenQcow2(from: string, to: string): Promise<void> {
  await runTool('qemu-img', ['convert', '-q', '-f', 'qcow2', '-O', 'qcow2', from, to]);
}

import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

const BLOCK = 4096;
const CHUNK = 1 << 20;
const ZERO = Buffer.alloc(BLOCK);

export interface SparseDigest {
  /** SHA-256 over the length and every non-zero 4 KiB block with its offset. */
  digest: string;
  bytes: number;
  /** Bytes in non-zero blocks: what the file really holds. */
  dataBytes: number;
}

/**
 * Reads a file once, digesting its non-zero blocks; with `copyTo`, writes those blocks to a new
 * sparse file of the same length. Guest RAM is mostly zero pages, so this costs a fraction of
 * hashing and copying every byte.
 */
export async function sparseDigest(path: string, copyTo?: string): Promise<SparseDigest> {
  const source = await open(path, 'r');
  const target = copyTo ? await open(copyTo, 'w', 0o600) : undefined;
  const hash = createHash('sha256');
  const buffer = Buffer.alloc(CHUNK);
  let position = 0;
  let dataBytes = 0;
  try {
    for (;;) {
      const { bytesRead } = await source.read(buffer, 0, CHUNK, position);
      if (bytesRead === 0) break;
      let runStart = -1;
      const flush = async (end: number) => {
        if (runStart < 0) return;
        const run = buffer.subarray(runStart, end);
        const offset = Buffer.alloc(8);
        offset.writeBigUInt64BE(BigInt(position + runStart));
        hash.update(offset).update(run);
        dataBytes += run.length;
        if (target) await target.write(run, 0, run.length, position + runStart);
        runStart = -1;
      };
      for (let at = 0; at < bytesRead; at += BLOCK) {
        const end = Math.min(at + BLOCK, bytesRead);
        const zero = buffer.subarray(at, end).equals(end - at === BLOCK ? ZERO : ZERO.subarray(0, end - at));
        if (zero) await flush(at);
        else if (runStart < 0) runStart = at;
      }
      await flush(bytesRead);
      position += bytesRead;
    }
    const length = Buffer.alloc(8);
    length.writeBigUInt64BE(BigInt(position));
    hash.update(length);
    if (target) await target.truncate(position);
    return { digest: hash.digest('hex'), bytes: position, dataBytes };
  } finally {
    await source.close();
    await target?.close();
  }
}

import {
  closeSync,
  fstatSync,
  ftruncateSync,
  openSync,
  readSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { type FileHandle, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { SnapshotError } from '../../errors.js';

/**
 * RAM deltas against a pool's base snapshot. A delta file holds the guest pages that differ
 * from the base's RAM file, one after another, then an index of their page numbers and a
 * trailer:
 *
 *   page data (count * PAGE) | page numbers (count * u32 LE) | trailer (TRAILER bytes)
 *   trailer = magic "VMKDELT1" | RAM bytes (u64 LE) | page size (u32 LE) | count (u32 LE)
 *
 * A page that is zero in the instance but not in the base is stored too (zeros are data here);
 * pages equal to the base cost nothing. Waking rebuilds a RAM file: the base's non-zero pages
 * copied into a file of holes (their runs found once per base; zero pages stay holes, and so take no
 * memory in /dev/shm), then the delta's written over them.
 */

export const PAGE = 4096;
const CHUNK = 1 << 20;
const MAGIC = Buffer.from('VMKDELT1');
const TRAILER = 24;

export interface DeltaInfo {
  /** Pages stored (that differ from the base). */
  pages: number;
  /** The delta file's size. */
  bytes: number;
  /** The guest RAM it applies to. */
  ramBytes: number;
}

async function sizeOf(file: FileHandle): Promise<number> {
  return (await file.stat()).size;
}

/** Writes the pages of `ramPath` that differ from `basePath` into `deltaPath` (via a .part file). */
export async function writeDelta(ramPath: string, basePath: string, deltaPath: string): Promise<DeltaInfo> {
  const partial = `${deltaPath}.part`;
  const ram = await open(ramPath, 'r');
  const base = await open(basePath, 'r');
  const out = await open(partial, 'w', 0o600); // guest RAM
  try {
    const ramBytes = await sizeOf(ram);
    const baseBytes = await sizeOf(base);
    if (ramBytes !== baseBytes || ramBytes % PAGE !== 0) {
      throw new SnapshotError(
        `RAM file ${ramPath} has ${ramBytes} bytes, its base ${basePath} ${baseBytes}: they cannot be compared page by page`,
      );
    }
    const mine = Buffer.alloc(CHUNK);
    const theirs = Buffer.alloc(CHUNK);
    const numbers: number[] = [];
    let written = 0;
    for (let position = 0; position < ramBytes; position += CHUNK) {
      const length = Math.min(CHUNK, ramBytes - position);
      await readFully(ram, mine, length, position, ramPath);
      await readFully(base, theirs, length, position, basePath);
      let runStart = -1;
      const flush = async (end: number) => {
        if (runStart < 0) return;
        await out.write(mine, runStart, end - runStart, written);
        written += end - runStart;
        runStart = -1;
      };
      if (mine.compare(theirs, 0, length, 0, length) === 0) continue;
      for (let at = 0; at < length; at += PAGE) {
        if (mine.compare(theirs, at, at + PAGE, at, at + PAGE) === 0) {
          await flush(at);
          continue;
        }
        numbers.push((position + at) / PAGE);
        if (runStart < 0) runStart = at;
      }
      await flush(length);
    }
    const index = Buffer.alloc(numbers.length * 4 + TRAILER);
    for (const [i, page] of numbers.entries()) index.writeUInt32LE(page, i * 4);
    const trailer = index.subarray(numbers.length * 4);
    MAGIC.copy(trailer, 0);
    trailer.writeBigUInt64LE(BigInt(ramBytes), 8);
    trailer.writeUInt32LE(PAGE, 16);
    trailer.writeUInt32LE(numbers.length, 20);
    await out.write(index, 0, index.length, written);
    await out.sync();
    await out.close();
    await rename(partial, deltaPath);
    return { pages: numbers.length, bytes: written + index.length, ramBytes };
  } catch (error) {
    await out.close().catch(() => {});
    await rm(partial, { force: true });
    throw error;
  } finally {
    await ram.close();
    await base.close();
  }
}

async function readFully(file: FileHandle, buffer: Buffer, length: number, position: number, what: string) {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await file.read(buffer, done, length - done, position + done);
    if (bytesRead === 0)
      throw new SnapshotError(`${what} ended at ${position + done} bytes, before its size`);
    done += bytesRead;
  }
}

/** The page numbers a delta file holds, checked against its trailer. */
async function readIndex(
  delta: FileHandle,
  path: string,
): Promise<{ info: DeltaInfo; numbers: Uint32Array }> {
  const bytes = await sizeOf(delta);
  const trailer = Buffer.alloc(TRAILER);
  if (bytes < TRAILER) throw new SnapshotError(`delta ${path} is truncated (${bytes} bytes)`);
  await readFully(delta, trailer, TRAILER, bytes - TRAILER, path);
  const count = trailer.readUInt32LE(20);
  const ramBytes = Number(trailer.readBigUInt64LE(8));
  if (!trailer.subarray(0, 8).equals(MAGIC) || trailer.readUInt32LE(16) !== PAGE) {
    throw new SnapshotError(`delta ${path} is not a vmkit RAM delta (bad trailer)`);
  }
  if (bytes !== count * (PAGE + 4) + TRAILER) {
    throw new SnapshotError(`delta ${path} has ${bytes} bytes, its trailer says ${count} pages`);
  }
  const index = Buffer.alloc(count * 4);
  await readFully(delta, index, index.length, count * PAGE, path);
  const numbers = new Uint32Array(count);
  for (let i = 0; i < count; i++) numbers[i] = index.readUInt32LE(i * 4);
  return { info: { pages: count, bytes, ramBytes }, numbers };
}

/** What a delta file holds, from its trailer. */
export function deltaInfo(path: string): DeltaInfo {
  const fd = openSync(path, 'r');
  try {
    const bytes = fstatSync(fd).size;
    const trailer = Buffer.alloc(TRAILER);
    if (bytes < TRAILER || readSync(fd, trailer, 0, TRAILER, bytes - TRAILER) !== TRAILER)
      throw new SnapshotError(`delta ${path} is truncated (${bytes} bytes)`);
    return { pages: trailer.readUInt32LE(20), bytes, ramBytes: Number(trailer.readBigUInt64LE(8)) };
  } finally {
    closeSync(fd);
  }
}

/**
 * Makes `outPath` afresh as a RAM file of the base's size, all holes: a VMM can map it at once
 * (QEMU reads no guest RAM until the incoming migration) while fillRam writes it.
 */
export function reserveRam(basePath: string, outPath: string): void {
  rmSync(outPath, { force: true });
  const fd = openSync(outPath, 'wx', 0o600);
  try {
    ftruncateSync(fd, statSync(basePath).size);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes a RAM file at `outPath`: the base's non-zero pages (zero pages stay holes), then, with
 * a delta, the delta's pages over them. The file is complete when this resolves.
 */
export async function buildRam(basePath: string, outPath: string, deltaPath?: string): Promise<void> {
  reserveRam(basePath, outPath);
  await fillRam(basePath, outPath, deltaPath);
}

/**
 * The base's runs of non-zero pages as [first page, page count], found by one scan of the base
 * and cached beside it (`<base>.runs`; a base never changes once made).
 */
export async function baseRuns(basePath: string): Promise<Array<[number, number]>> {
  const cache = `${basePath}.runs`;
  try {
    return JSON.parse(await readFile(cache, 'utf8')) as Array<[number, number]>;
  } catch {}
  const runs: Array<[number, number]> = [];
  const base = await open(basePath, 'r');
  try {
    const bytes = await sizeOf(base);
    const chunk = Buffer.alloc(CHUNK);
    const zero = Buffer.alloc(PAGE);
    for (let position = 0; position < bytes; position += CHUNK) {
      const length = Math.min(CHUNK, bytes - position);
      await readFully(base, chunk, length, position, basePath);
      for (let at = 0; at < length; at += PAGE) {
        if (chunk.compare(zero, 0, PAGE, at, at + PAGE) === 0) continue;
        const page = (position + at) / PAGE;
        const last = runs.at(-1);
        if (last && last[0] + last[1] === page) last[1]++;
        else runs.push([page, 1]);
      }
    }
  } finally {
    await base.close();
  }
  const partial = `${cache}.${process.pid}.part`;
  await writeFile(partial, JSON.stringify(runs), { mode: 0o600 });
  await rename(partial, cache);
  return runs;
}

/**
 * Fills a file that reserveRam made, in place (never truncated, so that a VMM that mapped it
 * already sees the pages): the base's non-zero pages, then the delta's pages over them.
 */
export async function fillRam(basePath: string, outPath: string, deltaPath?: string): Promise<void> {
  // Only the base's data is read: 40 MiB of a 256 MiB tiny guest's base (dd over all of it took
  // 70 to 400 ms here, and wrote whole blocks of zero pages too, which hold memory in /dev/shm).
  const runs = await baseRuns(basePath);
  const index = deltaPath ? await deltaIndex(deltaPath) : undefined;
  // Synchronous reads and writes: a base has thousands of runs, and a trip through libuv's
  // thread pool for each took 370 ms for 2,300 runs (97 MiB) here, against 110 to 130 ms so.
  const out = openSync(outPath, 'r+');
  const buffer = Buffer.alloc(CHUNK);
  const copy = (from: number, path: string, at: number, length: number, to: number) => {
    if (readSync(from, buffer, 0, length, at) !== length)
      throw new SnapshotError(`${path} ended before ${at + length} bytes`);
    writeSync(out, buffer, 0, length, to);
  };
  try {
    const ramBytes = fstatSync(out).size;
    const base = openSync(basePath, 'r');
    try {
      for (const [first, count] of runs) {
        for (let page = first; page < first + count; page += CHUNK / PAGE) {
          const length = Math.min(CHUNK, (first + count - page) * PAGE);
          copy(base, basePath, page * PAGE, length, page * PAGE);
        }
      }
    } finally {
      closeSync(base);
    }
    if (index && deltaPath) {
      const { info, numbers } = index;
      if (info.ramBytes !== ramBytes) {
        throw new SnapshotError(
          `delta ${deltaPath} is for ${info.ramBytes} bytes of RAM, the base ${basePath} has ${ramBytes}`,
        );
      }
      const delta = openSync(deltaPath, 'r');
      try {
        // Runs of consecutive pages are read and written in one go.
        for (let i = 0; i < numbers.length; ) {
          let j = i + 1;
          while (j < numbers.length && numbers[j] === (numbers[j - 1] as number) + 1 && j - i < CHUNK / PAGE)
            j++;
          copy(delta, deltaPath, i * PAGE, (j - i) * PAGE, (numbers[i] as number) * PAGE);
          i = j;
        }
      } finally {
        closeSync(delta);
      }
    }
  } catch (error) {
    rmSync(outPath, { force: true });
    throw error;
  } finally {
    closeSync(out);
  }
}

async function deltaIndex(path: string) {
  const delta = await open(path, 'r');
  try {
    return await readIndex(delta, path);
  } finally {
    await delta.close();
  }
}

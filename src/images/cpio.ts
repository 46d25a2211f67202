import { once } from 'node:events';
import { createWriteStream } from 'node:fs';

/** One entry of an initramfs. Owners are always root; times are fixed so output is reproducible. */
export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'symlink'; path: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

/** Writes a cpio archive in the "newc" format the Linux kernel unpacks as an initramfs. */
export async function writeCpio(file: string, entries: CpioEntry[]): Promise<void> {
  const out = createWriteStream(file);
  let offset = 0;
  const write = async (chunk: Buffer) => {
    offset += chunk.length;
    if (!out.write(chunk)) await once(out, 'drain');
  };
  const pad = () => write(Buffer.alloc((4 - (offset % 4)) % 4));

  let inode = 1;
  for (const entry of [
    ...entries,
    { type: 'file', path: 'TRAILER!!!', data: Buffer.alloc(0), mode: 0 } as const,
  ]) {
    const { mode, data } = describe(entry);
    const name = Buffer.from(`${entry.path.replace(/^\/+/, '')}\0`);
    const isTrailer = entry.path === 'TRAILER!!!';
    const fields = [
      isTrailer ? 0 : inode++,
      isTrailer ? 0 : mode,
      0, // uid
      0, // gid
      entry.type === 'dir' ? 2 : 1,
      0, // mtime
      data.length,
      0,
      0,
      0,
      0,
      name.length,
      0, // check
    ];
    await write(Buffer.from(`070701${fields.map((n) => n.toString(16).padStart(8, '0')).join('')}`, 'ascii'));
    await write(name);
    await pad();
    if (data.length > 0) {
      await write(data);
      await pad();
    }
  }
  out.end();
  await once(out, 'finish');
}

function describe(entry: CpioEntry): { mode: number; data: Buffer } {
  switch (entry.type) {
    case 'dir':
      return { mode: S_IFDIR | (entry.mode ?? 0o755), data: Buffer.alloc(0) };
    case 'file':
      return { mode: S_IFREG | (entry.mode ?? 0o644), data: entry.data };
    case 'symlink':
      return { mode: S_IFLNK | 0o777, data: Buffer.from(entry.target) };
  }
}

import { readFile } from 'node:fs/promises';
import { PNG } from 'pngjs';
import { ConfigError, ImageError } from '../errors.js';

/** Decodes a binary PPM (P6, 8 bits a sample), as QEMU's screendump writes it. */
export function decodePpm(data: Buffer): { width: number; height: number; rgb: Buffer } {
  // Header: "P6" whitespace width whitespace height whitespace maxval, one whitespace, pixels.
  const header = /^P6\s+(?:#[^\n]*\n\s*)*(\d+)\s+(\d+)\s+(\d+)\s/.exec(
    data.subarray(0, 100).toString('latin1'),
  );
  if (!header) throw new ImageError('the screendump is not a binary PPM (P6) file');
  const [text, w, h, max] = header as unknown as [string, string, string, string];
  if (Number(max) !== 255) throw new ImageError(`the screendump has ${max} levels a sample, not 255`);
  const width = Number(w);
  const height = Number(h);
  const rgb = data.subarray(text.length, text.length + width * height * 3);
  if (rgb.length !== width * height * 3) throw new ImageError('the screendump is cut short');
  return { width, height, rgb };
}

/** A PPM screendump as PNG bytes. */
export async function ppmFileToPng(ppmPath: string): Promise<Buffer> {
  const { width, height, rgb } = decodePpm(await readFile(ppmPath));
  const png = new PNG({ width, height });
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    png.data[j] = rgb[i] as number;
    png.data[j + 1] = rgb[i + 1] as number;
    png.data[j + 2] = rgb[i + 2] as number;
    png.data[j + 3] = 255;
  }
  return PNG.sync.write(png);
}

/** Virtual terminals the Linux kernel has: /dev/vcs1 to /dev/vcs63. */
export function checkTty(method: string, tty: unknown): number {
  if (typeof tty !== 'number' || !Number.isInteger(tty) || tty < 1 || tty > 63) {
    throw new ConfigError(
      `${method}: tty: must be a virtual terminal number from 1 to 63 (got ${String(tty)})`,
    );
  }
  return tty;
}

/**
 * The text of a virtual terminal from /dev/vcsa<n>: a header (rows, columns, cursor) and then a
 * character and an attribute byte per cell. Lines are trimmed at the end, as a person reads them.
 */
export function vcsaText(data: Buffer): string {
  if (data.length < 4) throw new ImageError('/dev/vcsa gave no header');
  const rows = data[0] as number;
  const cols = data[1] as number;
  const lines: string[] = [];
  for (let row = 0; row < rows; row++) {
    let line = '';
    for (let col = 0; col < cols; col++) {
      const code = data[4 + 2 * (row * cols + col)] ?? 32;
      line += code >= 32 && code < 127 ? String.fromCharCode(code) : ' ';
    }
    lines.push(line.trimEnd());
  }
  return `${lines.join('\n').trimEnd()}\n`;
}

// Kernel messages land anywhere in a console's output, even inside a line a program is printing
// ("login: [   12.345678] random: crng init done\r\n"). Matching ignores them, so that a pattern
// written against what the program printed still matches.
const KERNEL_LINE = /\[\s*\d+\.\d{6}\] [^\n]*(?:\n|$)/g;

/** A text with its kernel message lines removed, and where each kept character came from. */
export interface FilteredText {
  text: string;
  /** The offset in the original text of offset `i` of the filtered text (i may be text.length). */
  original(i: number): number;
}

export function withoutKernelLines(text: string): FilteredText {
  const kept: Array<{ from: number; at: number; length: number }> = [];
  let filtered = '';
  let last = 0;
  for (const match of text.matchAll(KERNEL_LINE)) {
    const index = match.index ?? 0;
    if (index > last) {
      kept.push({ from: last, at: filtered.length, length: index - last });
      filtered += text.slice(last, index);
    }
    last = index + match[0].length;
  }
  if (last < text.length) {
    kept.push({ from: last, at: filtered.length, length: text.length - last });
    filtered += text.slice(last);
  }
  return {
    text: filtered,
    original(i) {
      for (const segment of kept) {
        if (i < segment.at + segment.length) return segment.from + (i - segment.at);
      }
      const end = kept[kept.length - 1];
      return end ? Math.max(end.from + end.length, last) : last;
    },
  };
}

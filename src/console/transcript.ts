/** One exchange on a console: what was typed, or what the guest printed (escapes removed). */
export interface TranscriptEntry {
  /** Milliseconds since the console was created. */
  atMs: number;
  direction: 'sent' | 'received';
  text: string;
}

const MAX_ENTRIES = 10_000;
const MERGE_WITHIN_MS = 50;

/**
 * What was sent to and received from a console, with times. Output arriving in quick succession
 * is one entry; the oldest entries go once there are too many.
 */
export class Transcript {
  private readonly started = performance.now();
  private readonly kept: TranscriptEntry[] = [];

  sent(text: string): void {
    this.add('sent', text);
  }

  received(text: string): void {
    if (text !== '') this.add('received', text);
  }

  get entries(): readonly TranscriptEntry[] {
    return this.kept;
  }

  /** The transcript as text, newest last: `+12.345s > typed` and `+12.400s < printed`. */
  format(maxChars = 4000): string {
    const lines = this.kept.map(({ atMs, direction, text }) => {
      const mark = direction === 'sent' ? '>' : '<';
      return `+${(atMs / 1000).toFixed(3)}s ${mark} ${JSON.stringify(text).slice(1, -1)}`;
    });
    let out = '';
    for (let i = lines.length - 1; i >= 0 && out.length < maxChars; i--) out = `${lines[i]}\n${out}`;
    return out;
  }

  private add(direction: TranscriptEntry['direction'], text: string): void {
    const atMs = Math.round(performance.now() - this.started);
    const last = this.kept[this.kept.length - 1];
    if (
      last &&
      last.direction === direction &&
      direction === 'received' &&
      atMs - last.atMs < MERGE_WITHIN_MS
    ) {
      last.text += text;
      return;
    }
    this.kept.push({ atMs, direction, text });
    if (this.kept.length > MAX_ENTRIES) this.kept.splice(0, this.kept.length - MAX_ENTRIES);
  }
}

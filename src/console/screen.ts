import * as xtermModule from '@xterm/headless';

// @xterm/headless is CommonJS marked __esModule: Node's ESM gives its exports as the default
// export, a CommonJS build of vmkit (tsx in a CommonJS project) gives them as the namespace.
const xterm = (xtermModule as { default?: typeof xtermModule }).default ?? xtermModule;

/**
 * What a person would see on a terminal attached to the console: a headless terminal emulator
 * fed every byte, so that cursor-positioned full-screen programs (boot menus, newt/dialog/curses
 * installers) read as the screen they draw, not as the stream of escapes that draws it.
 */
export class ScreenModel {
  private readonly terminal: xtermModule.Terminal;
  private parsed: Promise<void> = Promise.resolve();
  /** Bumped each time written bytes have been parsed: the screen may have changed. */
  generation = 0;

  constructor(
    readonly cols = 80,
    readonly rows = 24,
  ) {
    this.terminal = new xterm.Terminal({ cols, rows, allowProposedApi: true, scrollback: 0 });
  }

  /** Feeds bytes; `onParsed` runs once they have changed the screen. */
  write(data: Uint8Array | string, onParsed?: () => void): void {
    this.parsed = new Promise((resolve) =>
      this.terminal.write(data, () => {
        this.generation++;
        onParsed?.();
        resolve();
      }),
    );
  }

  /** Resolves once everything written so far is on the screen. */
  settled(): Promise<void> {
    return this.parsed;
  }

  /** The visible rows as text, one line per row, trailing blanks and empty rows at the end removed. */
  text(): string {
    const buffer = this.terminal.buffer.active;
    const lines: string[] = [];
    for (let y = 0; y < this.rows; y++)
      lines.push(
        buffer
          .getLine(buffer.viewportY + y)
          ?.translateToString(true)
          .trimEnd() ?? '',
      );
    while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    return lines.join('\n');
  }

  dispose(): void {
    this.terminal.dispose();
  }
}

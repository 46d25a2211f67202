import { ConfigError, describeValue } from '../errors.js';

const ESC = '\x1b';

/** Keys by name, as the bytes a VT100-style terminal sends for them over a serial line. */
const NAMED: Record<string, string> = {
  enter: '\r',
  return: '\r',
  tab: '\t',
  space: ' ',
  backspace: '\x7f',
  esc: ESC,
  escape: ESC,
  up: `${ESC}[A`,
  down: `${ESC}[B`,
  right: `${ESC}[C`,
  left: `${ESC}[D`,
  home: `${ESC}[H`,
  end: `${ESC}[F`,
  insert: `${ESC}[2~`,
  delete: `${ESC}[3~`,
  pageup: `${ESC}[5~`,
  pagedown: `${ESC}[6~`,
  f1: `${ESC}OP`,
  f2: `${ESC}OQ`,
  f3: `${ESC}OR`,
  f4: `${ESC}OS`,
  f5: `${ESC}[15~`,
  f6: `${ESC}[17~`,
  f7: `${ESC}[18~`,
  f8: `${ESC}[19~`,
  f9: `${ESC}[20~`,
  f10: `${ESC}[21~`,
  f11: `${ESC}[23~`,
  f12: `${ESC}[24~`,
};

/** ctrl-@ and ctrl-a ... ctrl-z, ctrl-[ ctrl-\ ctrl-] ctrl-^ ctrl-_: the C0 control bytes. */
const CONTROL_CHARS = '@abcdefghijklmnopqrstuvwxyz[\\]^_';

/**
 * The bytes for a key: a printable character, or a name: "enter", "up", "f10", "ctrl-c", "esc", ... (case and `ctrl+`
 * spelling do not matter). Unknown names are a ConfigError listing the known ones.
 */
export function keyBytes(key: string): string {
  if (typeof key !== 'string')
    throw new ConfigError(`sendKey: a key name is a string, not ${describeValue(key)}`);
  if (key.length === 1 && key >= ' ' && key <= '~') return key; // a printable character is itself
  const name = key
    .trim()
    .toLowerCase()
    .replace(/^control[-+]/, 'ctrl-')
    .replace(/^ctrl\+/, 'ctrl-');
  const named = NAMED[name];
  if (named !== undefined) return named;
  const control = /^ctrl-(.)$/.exec(name)?.[1];
  const index = control === undefined ? -1 : CONTROL_CHARS.indexOf(control);
  if (index >= 0) return String.fromCharCode(index);
  throw new ConfigError(
    `sendKey: unknown key ${JSON.stringify(key)} (known: a printable character, ${Object.keys(NAMED).join(', ')}, ctrl-a ... ctrl-z)`,
  );
}

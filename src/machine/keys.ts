import { ConfigError } from '../errors.js';

/** QMP send-key codes ("qcode") for names people write, NixOS-style: "ctrl-alt-delete", "alt-f2", "ret". */
const ALIASES: Record<string, string> = {
  enter: 'ret',
  return: 'ret',
  space: 'spc',
  escape: 'esc',
  del: 'delete',
  control: 'ctrl',
  ctrl_l: 'ctrl',
  ctrl_r: 'ctrl_r',
  backspace: 'backspace',
  pageup: 'pgup',
  pagedown: 'pgdn',
  super: 'meta_l',
  win: 'meta_l',
};

const QCODES = new Set([
  ...'abcdefghijklmnopqrstuvwxyz0123456789'.split(''),
  ...Array.from({ length: 12 }, (_, i) => `f${i + 1}`),
  'shift',
  'shift_r',
  'alt',
  'alt_r',
  'ctrl',
  'ctrl_r',
  'meta_l',
  'meta_r',
  'menu',
  'esc',
  'tab',
  'ret',
  'spc',
  'backspace',
  'delete',
  'insert',
  'home',
  'end',
  'pgup',
  'pgdn',
  'up',
  'down',
  'left',
  'right',
  'caps_lock',
  'num_lock',
  'scroll_lock',
  'print',
  'sysrq',
  'pause',
  'minus',
  'equal',
  'bracket_left',
  'bracket_right',
  'backslash',
  'semicolon',
  'apostrophe',
  'grave_accent',
  'comma',
  'dot',
  'slash',
  'less',
]);

/** "ctrl-alt-delete" -> ["ctrl", "alt", "delete"]; throws a one-line ConfigError for an unknown key. */
export function keyCombo(combo: string): string[] {
  if (typeof combo !== 'string' || combo === '') {
    throw new ConfigError(
      `sendKey: key: must be a key name like "ctrl-alt-delete" (got ${JSON.stringify(combo)})`,
    );
  }
  // "-" alone, or a trailing "-" as in "ctrl--", is the minus key.
  const parts = combo === '-' ? ['minus'] : combo.replace(/--$/, '-minus').split('-');
  return parts.map((part) => {
    const name = part.toLowerCase();
    const code = ALIASES[name] ?? name;
    if (!QCODES.has(code)) {
      throw new ConfigError(
        `sendKey: unknown key ${JSON.stringify(part)} in ${JSON.stringify(combo)} (keys: a-z, 0-9, f1-f12, ctrl, alt, shift, ret, esc, tab, spc, delete, up, ...)`,
      );
    }
    return code;
  });
}

/** US layout: the qcode of each printable ASCII character, and whether it needs shift. */
const SHIFTED: Record<string, string> = {
  '!': '1',
  '@': '2',
  '#': '3',
  $: '4',
  '%': '5',
  '^': '6',
  '&': '7',
  '*': '8',
  '(': '9',
  ')': '0',
  _: 'minus',
  '+': 'equal',
  '{': 'bracket_left',
  '}': 'bracket_right',
  '|': 'backslash',
  ':': 'semicolon',
  '"': 'apostrophe',
  '~': 'grave_accent',
  '<': 'comma',
  '>': 'dot',
  '?': 'slash',
};
const PLAIN: Record<string, string> = {
  ' ': 'spc',
  '\n': 'ret',
  '\t': 'tab',
  '-': 'minus',
  '=': 'equal',
  '[': 'bracket_left',
  ']': 'bracket_right',
  '\\': 'backslash',
  ';': 'semicolon',
  "'": 'apostrophe',
  '`': 'grave_accent',
  ',': 'comma',
  '.': 'dot',
  '/': 'slash',
};

/** The key presses that type `char`: its qcode, with shift first where the US layout needs it. */
export function charKeys(char: string): string[] {
  if (/^[a-z0-9]$/.test(char)) return [char];
  if (/^[A-Z]$/.test(char)) return ['shift', char.toLowerCase()];
  const plain = PLAIN[char];
  if (plain) return [plain];
  const shifted = SHIFTED[char];
  if (shifted) return ['shift', shifted];
  throw new ConfigError(
    `sendChars: cannot type ${JSON.stringify(char)} (printable ASCII, newline and tab only)`,
  );
}

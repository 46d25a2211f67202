import { startMachine } from './src/index.js';
const m = await startMachine({ name: 'iso', image: { iso: '/tmp/iso/tiny.iso' }, firmware: (process.argv[2] as 'bios'|'uefi') ?? 'bios', log: (l) => console.log('log:', l) });
try {
  const t0 = Date.now();
  const a = await m.console.expect(/automatically in \d+s/, { timeoutMs: 60_000 });
  console.log('menu after', Date.now() - t0, a.on);
  m.console.sendKey('down');
  await new Promise((r) => setTimeout(r, 1000));
  console.log(m.console.screenText());
  m.console.sendKey('e');
  const e = await m.console.expect(/setparams 'vmkit tiny \(marked\)'/, { timeoutMs: 20_000 });
  console.log('editor', e.on);
  console.log(m.console.screenText());
  m.console.sendKey('down'); m.console.sendKey('ctrl-e'); m.console.send(' vmkit.edited=yes'); m.console.sendKey('ctrl-x');
  const b = await m.console.expect('vmkit: tiny image up', { timeoutMs: 60_000 });
  console.log('booted', Date.now() - t0);
  m.console.sendLine('cat /proc/cmdline');
  const c = await m.console.expect(/vmkit\.edited=yes/, { timeoutMs: 20_000 });
  console.log('cmdline ok', c.on, c.match[0]);
} catch (e) { console.log('ERR', (e as Error).message); console.log(m.console.transcript.format(1500)); }
await m.close();

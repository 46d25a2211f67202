import { mkdtempSync } from 'node:fs';
import { startMachine, buildImage } from './src/index.js';
import { loginInitrd, USER, ROOT_PASSWORD } from './test/vm/console-targets.js';
import { ConsoleShell } from './src/console/shell.js';
const dir = mkdtempSync('/tmp/ct-');
const tiny = await buildImage('tiny');
const initrd = await loginInitrd(dir);
const m = await startMachine({ name: 'login', image: { kernel: tiny.kernel, initrd, append: tiny.cmdline }, readyWhen: /login: $/ });
try {
  const t0 = Date.now();
  const sh = await ConsoleShell.open(m.console, 'login', { user: USER.name, password: USER.password, escalate: 'su', rootPassword: ROOT_PASSWORD });
  console.log('root shell after', Date.now() - t0);
  console.log(JSON.stringify(await sh.execute('id; echo err >&2; exit 3')));
  console.log(JSON.stringify(await sh.execute('printf "a\\nb"')));
  const t1 = Date.now(); for (let i = 0; i < 10; i++) await sh.execute('true'); console.log('10 rt', Date.now() - t1);
} catch (e) { console.log('ERR', (e as Error).message.slice(0, 3000)); }
await m.close();

import { mkdirSync, mkdtempSync, readdirSync, symlinkSync, cpSync } from 'node:fs';
import { join } from 'node:path';
import { buildInVm } from './src/builder/vm-builder.ts';
import { startMachine } from './src/index.ts';
const shared = join(process.env.HOME!, '.cache/vmkit');
const tmp = mkdtempSync('/tmp/vmkit-cache13-');
mkdirSync(join(tmp, 'images'));
for (const e of readdirSync(join(shared, 'images'))) if (!e.startsWith('.')) symlinkSync(join(shared, 'images', e), join(tmp, 'images', e));
symlinkSync(join(shared, 'debs'), join(tmp, 'debs'));
cpSync(join(shared, 'refs'), join(tmp, 'refs'), { recursive: true });
process.env.VMKIT_CACHE_DIR = tmp;
const t0 = Date.now();
const image = await buildInVm({ base: 'debian', name: 'smoke2', packages: ['hello'], run: ['hello > /etc/vmkit-run.txt', 'echo x > /etc/vmkit-recipe.txt'] }, { onProgress: (l) => console.log(`[${((Date.now()-t0)/1000).toFixed(1)}] ${l}`) });
console.log(image);
await using m = await startMachine({ name: 'check', image, timeoutMs: 600_000 });
console.log(`[${((Date.now()-t0)/1000).toFixed(1)}] booted`, await m.succeed('cat /etc/vmkit-run.txt /etc/vmkit-recipe.txt'));

try { await buildInVm({ base: 'debian', name: 'smoke3', run: ['echo before-the-failure', 'ls /nonexistent-dir'] }, { onProgress: (l) => console.log(l) }); } catch (e) { console.log('FAILED AS EXPECTED:', e.constructor.name, e.message); }

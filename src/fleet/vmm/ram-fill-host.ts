import { fillRam } from '../snapshots/delta.js';
import { joinGroups } from './cgroups.js';

/**
 * Entry point of the process that fills a VMM's RAM file from within the VMM's cgroups, so that
 * the pages count against them: `ram-fill-host <base> <out> <delta or ''> <group>...`.
 */
const [basePath, outPath, deltaPath, ...groups] = process.argv.slice(2);
if (!basePath || !outPath || deltaPath === undefined) {
  process.stderr.write("usage: ram-fill-host <base> <out> <delta or ''> <group>...\n");
  process.exit(2);
}
// A group it cannot join leaves the pages charged where they were before: said, not fatal.
for (const warning of joinGroups(groups, process.pid).warnings) process.stderr.write(`${warning}\n`);
await fillRam(basePath, outPath, deltaPath || undefined);

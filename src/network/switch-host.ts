import { readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { VirtualSwitch } from './switch.js';

/**
 * Entry point of a detached switch process: `switch-host <name> <socket> <stats file>`. Runs one
 * VirtualSwitch until SIGTERM or SIGINT, writing its counters to the stats file every second.
 * `macs.json` beside the stats file (MAC -> machine name) names the ports in those counters; it
 * is read again whenever it changes.
 */
const [name, socketPath, statsPath] = process.argv.slice(2);
if (!name || !socketPath || !statsPath) {
  process.stderr.write('usage: switch-host <name> <socket> <stats file>\n');
  process.exit(2);
}
const network = await VirtualSwitch.create(name, socketPath);
const macsPath = join(dirname(statsPath), 'macs.json');
const releases = new Map<string, () => void>();
let macsChanged = -1;
function claimMacs(): void {
  let names: Record<string, string>;
  try {
    const mtime = statSync(macsPath).mtimeMs;
    if (mtime === macsChanged) return;
    macsChanged = mtime;
    names = JSON.parse(readFileSync(macsPath, 'utf8'));
  } catch {
    return;
  }
  for (const release of releases.values()) release();
  releases.clear();
  for (const [mac, machine] of Object.entries(names)) {
    try {
      releases.set(mac, network.claimMac(mac, machine));
    } catch {}
  }
}
const writeStats = () => {
  claimMacs();
  // Through a rename: a reader (the sleep policy) must never see a half-written file.
  writeFileSync(`${statsPath}.part`, JSON.stringify({ at: new Date().toISOString(), ...network.stats() }), {
    mode: 0o600,
  });
  renameSync(`${statsPath}.part`, statsPath);
};
const timer = setInterval(writeStats, 1000);
writeStats();
const end = () => {
  clearInterval(timer);
  network.close().finally(() => process.exit(0));
};
process.on('SIGTERM', end);
process.on('SIGINT', end);
process.stdout.write(`switch ${name} listening on ${socketPath}\n`);

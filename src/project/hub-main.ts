#!/usr/bin/env node
import { runHub } from './hub.js';

/** Entry point of a VM's agent hub: `hub-main <run dir> <name> <banner wait ms>`. */
const [runDir, name, bannerWait] = process.argv.slice(2);
if (!runDir || !name) {
  process.stderr.write('usage: hub-main <run dir> <name> <banner wait ms>\n');
  process.exit(2);
}
// 0 is a wait too: none (a restored guest whose agent reads a request at once).
const wait = bannerWait !== undefined && /^\d+$/.test(bannerWait) ? Number(bannerWait) : 2500;
runHub(runDir, name, wait, (code) => process.exit(code)).catch((error: Error) => {
  process.stderr.write(`hub for ${name} failed: ${error.message}\n`);
  process.exit(1);
});

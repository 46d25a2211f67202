#!/usr/bin/env node
import { runHub } from './hub.js';

/** Entry point of a VM's agent hub: `hub-main <run dir> <name> <banner wait ms>`. */
const [runDir, name, bannerWait] = process.argv.slice(2);
if (!runDir || !name) {
  process.stderr.write('usage: hub-main <run dir> <name> <banner wait ms>\n');
  process.exit(2);
}
runHub(runDir, name, Number(bannerWait) || 2500, (code) => process.exit(code)).catch((error: Error) => {
  process.stderr.write(`hub for ${name} failed: ${error.message}\n`);
  process.exit(1);
});

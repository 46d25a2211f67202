// Memory of one QEMU process, from /proc/<pid>/smaps_rollup and /proc/<pid>/smaps: Rss, Pss and
// private memory of the whole process, and the Private_Dirty of its guest-RAM file mapping (the
// guest pages that process wrote). Measurement 5, for the clones of a fork and for cold boots.

import { realpathSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Snapshot } from 'vmkit';
import { median, round, sum } from '../lib.js';

export interface Memory {
  /** smaps_rollup, MiB. */
  rssMiB: number;
  pssMiB: number;
  /** Private_Clean + Private_Dirty: pages no other process maps. */
  privateMiB: number;
  /** Private_Dirty of the guest-RAM file mapping: guest pages this process wrote (MiB). */
  ramPrivateDirtyMiB: number;
  /** Rss of the guest-RAM file mapping (MiB). */
  ramRssMiB: number;
  /** privateMiB - ramPrivateDirtyMiB: QEMU's own private memory (TCG code buffer, heap), MiB. */
  qemuPrivateMiB: number;
  /** The mapping's path as /proc shows it. */
  ramMapping: string;
}

const mib = (kib: number) => round(kib / 1024);

function smapsFields(text: string): Map<string, number> {
  const fields = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (match?.[1] && match[2]) fields.set(match[1], (fields.get(match[1]) ?? 0) + Number(match[2]));
  }
  return fields;
}

/**
 * Reads one QEMU's memory. `isRam` picks the guest-RAM mapping(s) by the path /proc shows for them.
 */
export async function measureMemory(pid: number, isRam: (path: string) => boolean): Promise<Memory> {
  const rollup = smapsFields(await readFile(`/proc/${pid}/smaps_rollup`, 'utf8'));
  const smaps = await readFile(`/proc/${pid}/smaps`, 'utf8');
  // Each mapping: a header "start-end perms offset dev inode [path]", then "Key: N kB" lines.
  const header = /^[0-9a-f]+-[0-9a-f]+ \S+ [0-9a-f]+ \S+ \d+\s*(.*)$/;
  let inRam = false;
  let ramPath = '';
  const ramLines: string[] = [];
  for (const line of smaps.split('\n')) {
    const match = header.exec(line);
    if (match) {
      const path = match[1] ?? '';
      inRam = path !== '' && isRam(path);
      if (inRam) ramPath = path;
    } else if (inRam) {
      ramLines.push(line);
    }
  }
  if (!ramPath) throw new Error(`QEMU pid ${pid}: no guest-RAM file mapping found in /proc/${pid}/smaps`);
  const ram = smapsFields(ramLines.join('\n'));
  return {
    rssMiB: mib(rollup.get('Rss') ?? 0),
    pssMiB: mib(rollup.get('Pss') ?? 0),
    privateMiB: mib((rollup.get('Private_Clean') ?? 0) + (rollup.get('Private_Dirty') ?? 0)),
    ramPrivateDirtyMiB: mib(ram.get('Private_Dirty') ?? 0),
    ramRssMiB: mib(ram.get('Rss') ?? 0),
    qemuPrivateMiB: mib(
      (rollup.get('Private_Clean') ?? 0) +
        (rollup.get('Private_Dirty') ?? 0) -
        (ram.get('Private_Dirty') ?? 0),
    ),
    ramMapping: ramPath,
  };
}

/** A clone maps `${snapshot.dir}/ram` copy-on-write. */
export function snapshotRamMatcher(snapshot: Snapshot): (path: string) => boolean {
  const file = join(snapshot.dir, 'ram');
  const names = new Set([file, realpathSync(file)]);
  return (path) => names.has(path.replace(/ \(deleted\)$/, ''));
}

/** A booted machine maps its own RAM file, vmkit-<our pid>-<name>-<hex>.ram, unlinked once mapped. */
export function bootedRamMatcher(name: string): (path: string) => boolean {
  // RAM files are named vmkit-<run id>-<machine>-<random>.ram, the run id being <pid>-<hex>.
  const pattern = new RegExp(`/vmkit-${process.pid}-[0-9a-f]+-${name}-[0-9a-f]+\\.ram( \\(deleted\\))?$`);
  return (path) => pattern.test(path);
}

export function memorySummary(samples: Memory[]) {
  return {
    rssMiB: median(samples.map((m) => m.rssMiB)),
    pssMiB: median(samples.map((m) => m.pssMiB)),
    privateMiB: median(samples.map((m) => m.privateMiB)),
    ramPrivateDirtyMiB: median(samples.map((m) => m.ramPrivateDirtyMiB)),
    ramRssMiB: median(samples.map((m) => m.ramRssMiB)),
    qemuPrivateMiB: median(samples.map((m) => m.qemuPrivateMiB)),
  };
}

export function memoryTotals(samples: Memory[]) {
  return {
    rssMiB: sum(samples.map((m) => m.rssMiB)),
    pssMiB: sum(samples.map((m) => m.pssMiB)),
    privateMiB: sum(samples.map((m) => m.privateMiB)),
    ramPrivateDirtyMiB: sum(samples.map((m) => m.ramPrivateDirtyMiB)),
  };
}

// Measurements 4 and 5: snapshot.fork(N) until every clone answered its first command, then the
// memory of every clone (see memory.ts) and an ordinary round trip on a settled clone.

import type { Machine, Snapshot } from 'vmkit';
import { adoptMachine, closeMachine, log, median, round, sum } from '../lib.js';
import { firstCommand, qemuCpuMs, restoreOptions } from './common.js';
import { type Memory, measureMemory, snapshotRamMatcher } from './memory.js';

/** Forks `count` clones of `snapshot`, times them to all ready, measures them, closes them. */
export async function forkRun(snapshot: Snapshot, count: number) {
  const began = performance.now();
  const nodeCpu = process.cpuUsage();
  const clones = await snapshot.fork(count, restoreOptions);
  for (const clone of clones) adoptMachine(clone);
  const forkedMs = performance.now() - began;
  try {
    const firstCommands = await Promise.all(clones.map((clone) => firstCommand(clone)));
    const allReadyMs = performance.now() - began;
    const nodeUsed = process.cpuUsage(nodeCpu);
    const cloneCpuMs = clones.map((clone) => qemuCpuMs(clone.pid));
    log(
      `fork of ${count}: all answered after ${round(allReadyMs)} ms (fork() resolved at ${round(forkedMs)} ms)`,
    );
    const isRam = snapshotRamMatcher(snapshot);
    const memory: Memory[] = [];
    for (const clone of clones) memory.push(await measureMemory(clone.pid, isRam));
    // An ordinary round trip on a settled clone, to tell the first command's cost apart.
    const roundTrips: number[] = [];
    for (let i = 0; i < 5; i++) roundTrips.push(await firstCommand(clones[0] as Machine));
    const closing = performance.now();
    await Promise.all(clones.map((clone) => closeMachine(clone)));
    return {
      allReadyMs: round(allReadyMs),
      forkResolvedMs: round(forkedMs),
      cloneReadyMs: clones.map((clone) => clone.readyMs),
      firstCommandMs: firstCommands.map(round),
      qemuCpuMs: cloneCpuMs,
      qemuCpuTotalMs: sum(cloneCpuMs),
      benchProcessCpuMs: round((nodeUsed.user + nodeUsed.system) / 1000),
      settledRoundTripMs: median(roundTrips),
      closeAllMs: round(performance.now() - closing),
      memory,
    };
  } finally {
    await Promise.allSettled(clones.map((clone) => closeMachine(clone)));
  }
}

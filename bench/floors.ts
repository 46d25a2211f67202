// Round-trip floors of the transport, measured over the plain root shell the tiny image runs on
// its serial console (same guest, same kernel, no vmkit protocol): a builtin per round trip
// (the transport's floor) and one fork+exec of `sh -c` per round trip (the floor of any
// backdoor that runs each command in a process of its own); then vmkit's execute('true') on
// the same machine, and its ratio to the fork floor (target: 0.8 or better).
import type { Machine } from 'vmkit';

const round = (value: number) => Math.round(value * 10) / 10;
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

/** Round trips per second of `line(i)` typed on the console, each answered by `X<i>Y`. */
async function consoleRate(machine: Machine, count: number, line: (i: number) => string): Promise<number> {
  const began = performance.now();
  for (let i = 0; i < count; i++) {
    machine.sendConsole(`${line(i)}\n`);
    await machine.waitForConsoleText(new RegExp(`X${i}Y\\r?\\n`), { timeoutMs: 30_000 });
  }
  return (count / (performance.now() - began)) * 1000;
}

export async function measureFloors(machine: Machine, count: number) {
  // The console shell echoes what is typed: quoting keeps the echo from matching the answer.
  machine.sendConsole("stty -echo 2>/dev/null; PS1=''; echo READY'_'FLOOR\n");
  await machine.waitForConsoleText('READY_FLOOR', { timeoutMs: 30_000 });
  await consoleRate(machine, 5, (i) => `echo X"${i}"Y`); // warm-up
  // Warm up the emulator's translation of the backdoor's code paths, as the console's were.
  for (let i = 0; i < 30; i++) await machine.execute('true');
  // Alternating blocks, medians: other work on the host shifts all three alike.
  const builtin: number[] = [];
  const fork: number[] = [];
  const execute: number[] = [];
  for (let round = 0; round < 3; round++) {
    builtin.push(await consoleRate(machine, count, (i) => `echo X"${i}"Y`));
    fork.push(await consoleRate(machine, count, (i) => `sh -c 'echo X"${i}"Y'`));
    const began = performance.now();
    for (let i = 0; i < count; i++) await machine.execute('true');
    execute.push((count / (performance.now() - began)) * 1000);
  }
  const builtinPerSecond = median(builtin);
  const forkPerSecond = median(fork);
  const executePerSecond = median(execute);
  return {
    floors: {
      what: 'round trips per second over the plain shell on the serial console of the same guest',
      count,
      rounds: 3,
      samples: { builtin: builtin.map(round), forkExec: fork.map(round), executeTrue: execute.map(round) },
      builtinPerSecond: round(builtinPerSecond),
      forkExecPerSecond: round(forkPerSecond),
      executeTruePerSecond: round(executePerSecond),
      ratioToForkFloor: Math.round((executePerSecond / forkPerSecond) * 100) / 100,
      target: 0.8,
    },
  };
}

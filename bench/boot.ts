// Boot benchmark: vmkit's startMachine() against bare QEMU booting the same image, plus
// backdoor round trips. Run it with `npm run bench:boot` (add `-- --iterations N`).
//
// Variants, alternating A, B, C, A, B, C, ... so machine load weighs on all alike:
//   A  vmkit:     startMachine({ name, image: 'tiny', fresh: true }) until it resolves (a cold
//                 boot: backdoor up, setup run), then close();
//   B  bare QEMU: the same kernel, initrd, command line, machine type, memory (a shared RAM file
//                 in /dev/shm), CPUs and accelerator, the same virtio-serial layout with the
//                 backdoor's vmkit.shell port on a unix socket this process listens on; timed from
//                 spawn until the guest prints the backdoor banner on that socket.
//   C  cached:    startMachine({ name, image: 'tiny' }) from the boot cache (its entry is made
//                 before the first pair), until it resolves, then close();
// Each boot also records the CPU time QEMU had used by then (from /proc): under load from other
// work on a shared host it moves less than wall time, so `cpuRatio` shows better the guest work vmkit
// adds. Then, on one machine: execute('true') round trips per second and the round trip of a command
// printing 1 MB.
//
// Progress goes to stderr, one JSON object to stdout.

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AccelDecision, type BootImage, startMachine } from 'vmkit';
import { measureFloors } from './floors.js';
import {
  adoptMachine,
  BOOT_TIMEOUT_MS,
  CPUS,
  closeMachine,
  describeEnvironment,
  environment,
  hostCpus,
  loadAverages,
  log,
  MEMORY_MIB,
  median,
  onCleanup,
  parseIntOptions,
  processCpuMs,
  qemuBinary,
  ratio,
  round,
  runBenchmark,
} from './lib.js';

const USAGE = `Usage: npm run --silent bench:boot -- [options]   (--silent keeps npm's banner off stdout)
       node --import tsx bench/boot.ts [options]            (after npm run build)

Boots the tiny image with vmkit (A, cold), with bare QEMU (B) and starts it from vmkit's boot
cache (C), alternating A, B, C, A, B, C, ...,
then measures backdoor round trips on one machine. Progress on stderr, JSON on stdout.

Options:
  --iterations N    A/B pairs to measure (default 3)
  --warmup N        unmeasured A/B pairs before measuring (default 1)
  --round-trips N   execute('true') calls for the round-trip rate (default 50)
  --bulk N          runs of the 1 MB output command (default 3)
  -h, --help        print this help
`;

const BANNER = 'Spawning backdoor root shell...';
const BULK_BYTES = 1_000_000;
/** Command timeout of the round-trip machine: a stalled round trip fails the run within it. */
const COMMAND_TIMEOUT_MS = 20_000;
/** A round trip slower than this is counted as a stall, not as ordinary latency. */
const STALL_MS = 1_000;

// ---------------------------------------------------------------------------------------------
// Cleanup of what only this benchmark starts: every bare QEMU is tracked until it has exited
// (vmkit machines are closed by lib.ts).

const bareChildren = new Set<ChildProcess>();
/** RAM files of bare QEMUs, until removed. */
const bareRamFiles = new Set<string>();
let scratchDir: string | undefined;

function killBareChildren(): void {
  for (const child of bareChildren) {
    try {
      child.kill('SIGKILL');
    } catch {}
  }
}

function removeScratch(): void {
  for (const file of bareRamFiles) rmSync(file, { force: true });
  bareRamFiles.clear();
  if (scratchDir) rmSync(scratchDir, { recursive: true, force: true });
  scratchDir = undefined;
}

onCleanup(() => {
  killBareChildren();
  removeScratch();
});

/** Kills every bare QEMU still running and waits until each has exited. */
async function stopBareChildren(): Promise<void> {
  killBareChildren();
  const remaining = [...bareChildren].map(
    (child) =>
      new Promise<void>((resolve) =>
        child.exitCode !== null || child.signalCode !== null
          ? resolve()
          : child.once('exit', () => resolve()),
      ),
  );
  await Promise.all(remaining);
}

// ---------------------------------------------------------------------------------------------
// Variant A: vmkit

interface VmkitSample {
  /** startMachine() call to resolved. */
  startMs: number;
  /** What vmkit itself reports: QEMU launch to banner. */
  bootMs: number;
  /** CPU time QEMU had used when startMachine() resolved. */
  cpuMs: number;
  closeMs: number;
}

async function bootVmkit(name: string, fresh = true): Promise<VmkitSample> {
  const began = performance.now();
  const machine = await startMachine({
    name,
    fresh,
    image: 'tiny',
    memoryMiB: MEMORY_MIB,
    cpus: CPUS,
    accel: 'auto',
    timeoutMs: BOOT_TIMEOUT_MS,
  });
  const startMs = performance.now() - began;
  adoptMachine(machine);
  const cpuMs = processCpuMs(machine.pid);
  const closeMs = await closeMachine(machine);
  return { startMs: round(startMs), bootMs: machine.readyMs, cpuMs, closeMs };
}

// ---------------------------------------------------------------------------------------------
// Variant B: bare QEMU

interface BareSample {
  /** spawn() to the banner line on the vmkit.shell port's socket. */
  bootMs: number;
  /** CPU time QEMU had used at the banner. */
  cpuMs: number;
  /** SIGKILL to exit. */
  killMs: number;
}

/** Listens on a unix socket before QEMU starts; resolves with QEMU's (client) connection. */
function listen(path: string): Promise<{ server: Server; connection: Promise<Socket> }> {
  const server = createServer();
  const connection = new Promise<Socket>((resolve, reject) => {
    server.once('connection', (socket) => {
      server.close();
      resolve(socket);
    });
    server.once('error', reject);
  });
  connection.catch(() => {});
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve({ server, connection }));
  });
}

/** The bare equivalent of vmkit's qemuArgs(): same machine, RAM backing, devices and ports. */
function bareArgs(
  image: BootImage,
  accel: AccelDecision,
  shellSocket: string,
  ramFile: string,
  consoleSocket?: string,
): string[] {
  // biome-ignore format: one QEMU flag and its value per line, like vmkit's qemuArgs()
  return [
    '-name', 'bench-bare',
    '-object', `memory-backend-file,id=ram0,size=${MEMORY_MIB}M,mem-path=${ramFile.replaceAll(',', ',,')},share=on`,
    '-machine', 'pc,memory-backend=ram0',
    '-accel', accel.accel,
    ...(accel.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', String(MEMORY_MIB),
    '-smp', String(CPUS),
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-kernel', image.kernel,
    '-initrd', image.initrd,
    '-append', image.cmdline,
    // The guest's serial console is read only for the bare floors; otherwise discarded.
    '-chardev', consoleSocket ? `socket,id=console,path=${consoleSocket}` : 'null,id=console',
    '-serial', 'chardev:console',
    '-device', 'virtio-serial-pci,id=serial0',
    // The guest's backdoor looks for the port by name and prints its banner there.
    '-chardev', `socket,id=shell,path=${shellSocket}`,
    '-device', 'virtserialport,chardev=shell,name=vmkit.shell',
    // The backdoor opens the transfer port when present; keep it so the guest does the same work.
    '-chardev', 'null,id=transfer',
    '-device', 'virtserialport,chardev=transfer,name=vmkit.transfer',
    '-device', 'virtio-rng-pci',
  ];
}

async function bootBare(
  image: BootImage,
  accel: AccelDecision,
  dir: string,
  index: number,
): Promise<BareSample> {
  const shellSocket = join(dir, `sh${index}.sock`);
  rmSync(shellSocket, { force: true });
  // Where vmkit keeps guest RAM too: a file in /dev/shm that QEMU maps shared.
  const ramFile = join(existsSync('/dev/shm') ? '/dev/shm' : dir, `vmkit-bench-${process.pid}-${index}.ram`);
  bareRamFiles.add(ramFile);
  const { server, connection } = await listen(shellSocket);
  const began = performance.now();
  const child = spawn(qemuBinary(), bareArgs(image, accel, shellSocket, ramFile), {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  bareChildren.add(child);
  let output = '';
  const onOutput = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on('data', onOutput);
  child.stderr?.on('data', onOutput);
  const exited = new Promise<void>((resolve) => {
    child.once('error', (error) => {
      output += `\n${error.message}`;
      bareChildren.delete(child);
      resolve();
    });
    child.once('exit', () => {
      bareChildren.delete(child);
      resolve();
    });
  });

  let socket: Socket | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    const banner = connection.then(
      (connected) =>
        new Promise<number>((resolve) => {
          socket = connected;
          let pending = '';
          connected.on('data', (chunk: Buffer) => {
            pending += chunk.toString('latin1');
            let newline = pending.indexOf('\n');
            while (newline >= 0) {
              const line = pending.slice(0, newline).replace(/\r$/, '');
              pending = pending.slice(newline + 1);
              if (line === BANNER) resolve(performance.now());
              newline = pending.indexOf('\n');
            }
          });
        }),
    );
    const died = exited.then(() => {
      throw new Error(`bare QEMU exited before the banner; QEMU said:\n${output.trim() || '(nothing)'}`);
    });
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`bare QEMU: no banner after ${BOOT_TIMEOUT_MS} ms`)),
        BOOT_TIMEOUT_MS,
      );
    });
    const bannerAt = await Promise.race([banner, died, expired]);
    const cpuMs = child.pid ? processCpuMs(child.pid) : 0;
    const killing = performance.now();
    child.kill('SIGKILL');
    await exited;
    return { bootMs: round(bannerAt - began), cpuMs, killMs: round(performance.now() - killing) };
  } finally {
    clearTimeout(timer);
    if (bareChildren.has(child)) {
      child.kill('SIGKILL');
      await exited;
    }
    socket?.destroy();
    server.close();
    rmSync(shellSocket, { force: true });
    rmSync(ramFile, { force: true });
    bareRamFiles.delete(ramFile);
  }
}

/**
 * The round-trip floors the way the project's reference measured them: over the plain root shell
 * on the serial console of a bare QEMU guest (the same kernel and initrd), with nothing of vmkit's
 * console handling between the socket and the bytes. A builtin each, then one fork+exec each.
 */
async function bareFloors(image: BootImage, accel: AccelDecision, dir: string, count: number) {
  const shellSocket = join(dir, 'floor-sh.sock');
  const consoleSocket = join(dir, 'floor-con.sock');
  const ramFile = join(existsSync('/dev/shm') ? '/dev/shm' : dir, `vmkit-bench-${process.pid}-floor.ram`);
  bareRamFiles.add(ramFile);
  const shell = await listen(shellSocket);
  const serial = await listen(consoleSocket);
  const child = spawn(qemuBinary(), bareArgs(image, accel, shellSocket, ramFile, consoleSocket), {
    stdio: 'ignore',
  });
  bareChildren.add(child);
  child.once('exit', () => bareChildren.delete(child));
  let timer: NodeJS.Timeout | undefined;
  const bounded = <T>(work: Promise<T>, what: string) =>
    Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`bare floors: ${what} did not come`)), BOOT_TIMEOUT_MS);
      }),
    ]).finally(() => clearTimeout(timer));
  try {
    const [console, shellConnection] = await bounded(
      Promise.all([serial.connection, shell.connection]),
      'the connections',
    );
    let seen = '';
    const waiters: { text: string; resolve: () => void }[] = [];
    const check = () => {
      for (const waiter of [...waiters]) {
        const at = seen.indexOf(waiter.text);
        if (at < 0) continue;
        seen = seen.slice(at + waiter.text.length);
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    };
    let banner = '';
    const bannerSeen = new Promise<void>((resolve) =>
      shellConnection.on('data', (chunk: Buffer) => {
        banner += chunk.toString('latin1');
        if (banner.includes(BANNER)) resolve();
      }),
    );
    console.on('data', (chunk: Buffer) => {
      seen = (seen + chunk.toString('latin1')).slice(-65536);
      check();
    });
    const waitFor = (text: string) =>
      bounded(
        new Promise<void>((resolve) => {
          waiters.push({ text, resolve });
          check();
        }),
        JSON.stringify(text),
      );
    await bounded(bannerSeen, 'the banner');
    console.write("stty -echo 2>/dev/null; PS1=''; echo READY'_'FLOOR\n");
    await waitFor('READY_FLOOR');
    const rate = async (line: (i: number) => string) => {
      const began = performance.now();
      for (let i = 0; i < count; i++) {
        console.write(`${line(i)}\n`);
        await waitFor(`X${i}Y`); // the quotes keep any echo of the line from matching
      }
      return (count / (performance.now() - began)) * 1000;
    };
    await rate((i) => `echo X"${i}"Y`); // warm-up
    const builtin: number[] = [];
    const fork: number[] = [];
    for (let round = 0; round < 3; round++) {
      builtin.push(await rate((i) => `echo X"${i}"Y`));
      fork.push(await rate((i) => `sh -c 'echo X"${i}"Y'`));
    }
    return {
      what: 'round trips per second over the plain shell on the serial console of a bare QEMU guest, read straight off its socket',
      count,
      rounds: 3,
      samples: { builtin: builtin.map(round), forkExec: fork.map(round) },
      builtinPerSecond: median(builtin),
      forkExecPerSecond: median(fork),
    };
  } finally {
    child.kill('SIGKILL');
    shell.server.close();
    serial.server.close();
    rmSync(ramFile, { force: true });
    bareRamFiles.delete(ramFile);
  }
}

// ---------------------------------------------------------------------------------------------
// C and D: round trips on one machine

async function measureCommands(roundTrips: number, bulkRuns: number) {
  log('starting a machine for the round-trip measurements');
  const machine = await startMachine({
    name: 'bench-rt',
    fresh: true,
    image: 'tiny',
    memoryMiB: MEMORY_MIB,
    cpus: CPUS,
    accel: 'auto',
    timeoutMs: BOOT_TIMEOUT_MS,
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
  });
  adoptMachine(machine);
  try {
    const floors = await measureFloors(machine, roundTrips);
    log(`floors: ${JSON.stringify(floors.floors)}`);
    for (let i = 0; i < 3; i++) await machine.succeed('true'); // warm-up
    const perCall: number[] = [];
    const began = performance.now();
    for (let i = 0; i < roundTrips; i++) {
      const t = performance.now();
      const result = await machine.execute('true');
      perCall.push(performance.now() - t);
      if (result.exitCode !== 0)
        throw new Error(`execute('true') exited ${result.exitCode}: ${result.stderr}`);
    }
    const totalMs = performance.now() - began;
    const perSecond = Math.round((roundTrips / totalMs) * 1000 * 10) / 10;
    const stalls = perCall.filter((ms) => ms > STALL_MS).map(round);
    log(
      `execute('true'): ${roundTrips} calls in ${round(totalMs)} ms, ${perSecond}/s` +
        (stalls.length ? `; ${stalls.length} stalled (${stalls.join(', ')} ms)` : ''),
    );

    const command = `head -c ${BULK_BYTES} /dev/zero`;
    const bulk: number[] = [];
    const received: number[] = [];
    for (let i = 0; i < bulkRuns; i++) {
      const t = performance.now();
      const result = await machine.executeRaw(command);
      const ms = performance.now() - t;
      if (result.status !== 0) throw new Error(`${command}: exit ${result.status}: ${result.stderr}`);
      bulk.push(round(ms));
      received.push(result.stdout.length);
      // A short reply is vmkit losing output, not a benchmark failure: record it and go on.
      const short =
        result.stdout.length === BULK_BYTES ? '' : `; INCOMPLETE: ${result.stdout.length} bytes arrived`;
      log(`${command}: ${round(ms)} ms${short}`);
    }
    return {
      ...floors,
      roundTrips: {
        command: 'true',
        count: roundTrips,
        totalMs: round(totalMs),
        perSecond,
        medianMs: median(perCall),
        maxMs: round(Math.max(...perCall)),
        /** Calls over STALL_MS: ordinary latency here is tens of ms. */
        stallsMs: stalls,
      },
      bulkOutput: {
        command,
        bytes: BULK_BYTES,
        samplesMs: bulk,
        medianMs: median(bulk),
        mbPerSecond: Math.round((BULK_BYTES / 1e6 / (median(bulk) / 1000)) * 100) / 100,
        /** Bytes of stdout received per run; anything but `bytes` means output was lost. */
        receivedBytes: received,
        complete: received.every((n) => n === BULK_BYTES),
      },
    };
  } finally {
    await closeMachine(machine);
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const options = parseIntOptions(USAGE, {
    iterations: { default: 3 },
    warmup: { default: 1, min: 0 },
    'round-trips': { default: 50 },
    bulk: { default: 3 },
  });
  if (!options) return;
  const { iterations, warmup, 'round-trips': roundTrips, bulk: bulkRuns } = options;

  const date = new Date().toISOString();
  const env = await environment();
  const { image, accel, imageLookupMs } = env;
  log(`${warmup} warm-up pair(s), then ${iterations} measured pair(s), alternating vmkit and bare QEMU`);

  scratchDir = mkdtempSync(join(tmpdir(), 'vmkit-bench-'));
  const vmkitSamples: VmkitSample[] = [];
  const bareSamples: BareSample[] = [];
  const cachedSamples: VmkitSample[] = [];
  log('making sure the boot cache holds this configuration');
  await bootVmkit('bench-seed', false);
  for (let i = 0; i < warmup + iterations; i++) {
    const measured = i >= warmup;
    const label = measured ? `pair ${i - warmup + 1}/${iterations}` : `warm-up ${i + 1}/${warmup}`;
    const a = await bootVmkit(`bench-${i}`);
    log(
      `${label} A vmkit: ${a.startMs} ms to resolved (banner at ${a.bootMs} ms, QEMU CPU ${a.cpuMs} ms), close ${a.closeMs} ms`,
    );
    const b = await bootBare(image, accel, scratchDir, i);
    log(`${label} B bare:  ${b.bootMs} ms to banner (QEMU CPU ${b.cpuMs} ms), kill ${b.killMs} ms`);
    const c = await bootVmkit(`bench-cached-${i}`, false);
    log(`${label} C cached: ${c.startMs} ms to resolved (restored at ${c.bootMs} ms), close ${c.closeMs} ms`);
    if (measured) {
      vmkitSamples.push(a);
      bareSamples.push(b);
      cachedSamples.push(c);
    }
  }

  const commands = await measureCommands(roundTrips, bulkRuns);
  log('bare floors: the plain shell on a bare QEMU guest');
  const bare = await bareFloors(image, accel, scratchDir, roundTrips);
  log(`bare floors: ${JSON.stringify(bare)}`);

  const vmkitMedian = median(vmkitSamples.map((s) => s.startMs));
  const bareMedian = median(bareSamples.map((s) => s.bootMs));
  const cachedMedian = median(cachedSamples.map((s) => s.startMs));
  const report = {
    benchmark: 'boot',
    date,
    ...describeEnvironment(env),
    host: {
      cpus: hostCpus(),
      loadavg: loadAverages(),
      node: process.version,
    },
    memoryMiB: MEMORY_MIB,
    cpus: CPUS,
    iterations,
    warmupPairs: warmup,
    vmkit: {
      what: 'startMachine({ fresh: true }) call until resolved: a cold boot (backdoor answered, setup ran)',
      samplesMs: vmkitSamples.map((s) => s.startMs),
      medianMs: vmkitMedian,
      bootSamplesMs: vmkitSamples.map((s) => s.bootMs),
      cpuSamplesMs: vmkitSamples.map((s) => s.cpuMs),
      closeSamplesMs: vmkitSamples.map((s) => s.closeMs),
    },
    bare: {
      what: "spawn of qemu-system-x86_64 until the banner line on the vmkit.shell port's socket",
      samplesMs: bareSamples.map((s) => s.bootMs),
      medianMs: bareMedian,
      cpuSamplesMs: bareSamples.map((s) => s.cpuMs),
      killSamplesMs: bareSamples.map((s) => s.killMs),
    },
    cached: {
      what: 'startMachine() call until resolved, restored from the boot cache (setup ran)',
      samplesMs: cachedSamples.map((s) => s.startMs),
      medianMs: cachedMedian,
      restoreSamplesMs: cachedSamples.map((s) => s.bootMs),
      closeSamplesMs: cachedSamples.map((s) => s.closeMs),
    },
    /** A start from the boot cache against a cold boot, and against bare QEMU's boot. */
    cachedOverCold: ratio(cachedMedian, vmkitMedian),
    cachedOverBare: ratio(cachedMedian, bareMedian),
    ratio: ratio(vmkitMedian, bareMedian),
    overheadMs: round(vmkitMedian - bareMedian),
    /** The same ratio in QEMU's CPU time, which other load on a shared host moves less. */
    cpuRatio: ratio(median(vmkitSamples.map((s) => s.cpuMs)), median(bareSamples.map((s) => s.cpuMs))),
    imageLookupMs,
    ...commands,
    bareFloors: {
      ...bare,
      /** vmkit's execute('true') against the fork floor measured this way. */
      executeOverBareForkFloor: ratio(commands.floors.executeTruePerSecond, bare.forkExecPerSecond),
    },
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
}

await runBenchmark(main, stopBareChildren);

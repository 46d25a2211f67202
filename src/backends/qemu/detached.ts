import { randomInt } from 'node:crypto';
import { existsSync, lstatSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { BackdoorChannel } from '../../agent/backdoor.js';
import { MachineCrashedError, TimeoutError, tail, VmmStartError } from '../../errors.js';
import {
  type DetachedRecord,
  isAlive,
  isRunning,
  readRecord,
  recordChildOf,
  spawnDetached,
  stopDetached,
} from '../../runtime/detached.js';
import { readPlainFile } from '../../util/files.js';
import { privateSocket } from '../../util/private.js';
import { Deadline, sleep } from '../../util/time.js';
import { which } from '../../util/which.js';
import type { VmmSpec } from '../backend.js';
import { qemuArgs, SOCKETS } from './args.js';
import { QEMU_MISSING, qemuBinary } from './process.js';
import { QmpClient } from './qmp.js';

/** The record of a detached QEMU in its state folder. */
export const vmmRecordPath = (stateDir: string) => join(stateDir, 'vmm.json');
export const qemuLogPath = (stateDir: string) => join(stateDir, 'qemu.log');
export const consoleLogPath = (stateDir: string) => join(stateDir, 'console.log');

/**
 * Where vmkit keeps a detached QEMU's record and log: its state folder by default; a folder
 * the VMM cannot write where the VMM runs as another uid than vmkit (a fleet's jailed VMMs),
 * since vmkit signals the pid the record names and appends to the log as its own uid.
 */
export interface DetachedFiles {
  record: string;
  log: string;
}

const filesIn = (stateDir: string): DetachedFiles => ({
  record: vmmRecordPath(stateDir),
  log: qemuLogPath(stateDir),
});

const logTail = (logPath: string) => {
  try {
    return tail(readPlainFile(logPath).toString('utf8'), 1500).trim() || '(nothing)';
  } catch {
    return '(no log)';
  }
};

/**
 * Starts QEMU for `spec` detached from this process (its own session, no parent-death signal),
 * listening itself on its QMP, agent, transfer and console sockets in the state folder, and
 * resolves with its record once QMP answers.
 */
export async function launchDetachedQemu(
  spec: Omit<VmmSpec, 'runtime' | 'detached'>,
  /**
   * Runs QEMU through another program (a jail) that ends by exec'ing QEMU in the same process,
   * or (`forks`) in the one child it forks first: the record then names that child.
   */
  wrap?: (program: string, args: string[]) => { program: string; args: string[]; forks?: boolean },
  files: DetachedFiles = filesIn(spec.stateDir),
): Promise<DetachedRecord> {
  const binary = await which(qemuBinary());
  if (!binary) throw new VmmStartError(QEMU_MISSING);
  const args = qemuArgs({ ...spec, detached: true });
  const command = wrap ? wrap(binary, args) : { program: binary, args };
  // A VMM that was SIGKILLed leaves its socket files: waiting for them would not wait at all.
  for (const name of Object.values(SOCKETS)) rmSync(join(spec.stateDir, name), { force: true });
  const spawned = spawnDetached({
    program: command.program,
    args: command.args,
    logPath: files.log,
    recordPath: files.record,
    marker: join(spec.stateDir, SOCKETS.qmp),
  });
  const deadline = new Deadline(spec.startTimeoutMs, `QEMU for ${spec.name} to listen on its sockets`);
  const record = command.forks ? await recordChild(spawned, files.record, deadline) : spawned;
  while (!Object.values(SOCKETS).every((name) => existsSync(join(spec.stateDir, name)))) {
    // A wrapper execs programs in turn: alive is enough until QEMU listens.
    if (!(wrap ? isAlive(record) : isRunning(record))) {
      throw new VmmStartError(
        `QEMU for ${spec.name} exited during start-up\ncommand: ${binary} ${args.join(' ')}\nQEMU said:\n${logTail(files.log)}`,
      );
    }
    if (deadline.expired) {
      await stopDetached(record, 0);
      throw new VmmStartError(
        `QEMU for ${spec.name} did not listen on its sockets within ${spec.startTimeoutMs} ms; QEMU said:\n${logTail(files.log)}`,
      );
    }
    await sleep(10);
  }
  // QEMU made them under its umask (077 through spawnDetached; a jail sets its own): exact anyway.
  for (const name of Object.values(SOCKETS)) privateSocket(join(spec.stateDir, name));
  // QMP answers once QEMU is through its start-up: guest RAM is mapped by then.
  const attached = await AttachedQemu.attach(
    spec.name,
    spec.stateDir,
    Math.max(1000, deadline.remaining()),
    files.record,
  );
  attached.detach();
  return record;
}

/** Waits for the wrapper's child (the process that becomes QEMU) and records it in the wrapper's place. */
async function recordChild(
  wrapper: DetachedRecord,
  recordPath: string,
  deadline: Deadline,
): Promise<DetachedRecord> {
  for (;;) {
    const child = recordChildOf(wrapper, recordPath);
    if (child) return child;
    if (!isAlive(wrapper) || deadline.expired) {
      await stopDetached(wrapper, 0);
      throw new VmmStartError(
        `the VMM's jail (pid ${wrapper.pid}) started no process within its start-up time`,
      );
    }
    await sleep(5);
  }
}

/** Connects to a unix socket, retrying while its listener is not up yet (ECONNREFUSED, ENOENT). */
async function connectSocket(path: string, timeoutMs: number): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      // The VMM's folder may be another uid's: a link there could aim vmkit at any socket.
      if (lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink()) {
        throw new VmmStartError(`${path} is a symbolic link, not the VMM's socket`);
      }
      return await connectOnce(path, Math.max(1, deadline - Date.now()));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if ((code !== 'ECONNREFUSED' && code !== 'ENOENT') || Date.now() > deadline) {
        throw new VmmStartError(`cannot connect to ${path}: ${(error as Error).message}`);
      }
      await sleep(20);
    }
  }
}

function connectOnce(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new TimeoutError(`a connection to ${path}`, timeoutMs));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.on('error', () => {});
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/** vmkit's side of a detached QEMU for the length of one call: QMP and, on request, the agent. */
export class AttachedQemu {
  private constructor(
    readonly name: string,
    readonly stateDir: string,
    readonly record: DetachedRecord,
    readonly qmp: QmpClient,
    private readonly sockets: Socket[],
  ) {}

  static async attach(
    name: string,
    stateDir: string,
    timeoutMs = 10_000,
    recordPath = vmmRecordPath(stateDir),
  ): Promise<AttachedQemu> {
    const record = readRecord(recordPath);
    if (!isRunning(record))
      throw new VmmStartError(`the VMM of ${name} is not running (record in ${stateDir})`);
    const socket = await connectSocket(join(stateDir, SOCKETS.qmp), timeoutMs);
    const qmp = await QmpClient.connect(socket, timeoutMs);
    return new AttachedQemu(name, stateDir, record, qmp, [socket]);
  }

  consoleTail(): string {
    try {
      return tail(readPlainFile(consoleLogPath(this.stateDir)).toString('utf8'), 2000);
    } catch {
      return '';
    }
  }

  /**
   * Connects to the guest agent and checks that it answers. The guest restarts its backdoor
   * when an earlier host went away, so the first request waits for that restart's banner (a
   * first boot: pass the boot timeout as `bannerWaitMs`).
   */
  async agent(timeoutMs = 15_000, bannerWaitMs = 2500): Promise<BackdoorChannel> {
    const shell = await connectSocket(join(this.stateDir, SOCKETS.shell), timeoutMs);
    const transfer = await connectSocket(join(this.stateDir, SOCKETS.transfer), timeoutMs);
    this.sockets.push(shell, transfer);
    // Ids of its own: a reply to a request of a vanished earlier caller cannot match one of ours.
    const channel = new BackdoorChannel(
      this.name,
      shell,
      transfer,
      () => this.consoleTail(),
      randomInt(1e6, 1e9),
    );
    // The guest drops what arrives while its backdoor has the port closed, so a request is only
    // safe after the banner: a restarting backdoor prints one within about a second. No banner
    // means the backdoor had the port open before this attach, and reads requests already.
    const restarted = await channel.waitForBanner(Math.min(timeoutMs, bannerWaitMs)).then(
      () => true,
      () => false,
    );
    if (!restarted) channel.assumeBannerSeen();
    // A banner can also come late, under the probe: the backdoor was blocked writing a reply to
    // a host that went away mid-request (a killed CLI) and restarts only once we drain it. The
    // probe is harmless to repeat, and the restarted backdoor reads it.
    const probe = await channel.ping(timeoutMs).catch((error: Error) => {
      if (error instanceof MachineCrashedError && /restarted during/.test(error.message))
        return channel.ping(timeoutMs);
      throw error;
    });
    if (probe.status !== 0)
      throw new VmmStartError(`the agent of ${this.name} did not answer a probe (status ${probe.status})`);
    return channel;
  }

  /** Connects to the serial console (one reader at a time); it closes when the VMM exits. */
  async serialConsole(timeoutMs = 10_000): Promise<Socket> {
    const socket = await connectSocket(join(this.stateDir, SOCKETS.console), timeoutMs);
    this.sockets.push(socket);
    return socket;
  }

  /** Disconnects; the VMM runs on. */
  detach(): void {
    this.qmp.close();
    for (const socket of this.sockets) socket.destroy();
  }
}

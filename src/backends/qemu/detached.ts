import { existsSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { BackdoorChannel } from '../../agent/backdoor.js';
import { TimeoutError, tail, VmmStartError } from '../../errors.js';
import {
  type DetachedRecord,
  isAlive,
  isRunning,
  processesNaming,
  readRecord,
  recordChildOf,
  spawnDetached,
  stopDetached,
} from '../../runtime/detached.js';
import { readPlainFile } from '../../util/files.js';
import { privateSocket } from '../../util/private.js';
import { Deadline, sleep } from '../../util/time.js';
import { takeTurn } from '../../util/turn.js';
import { which } from '../../util/which.js';
import type { VmmSpec } from '../backend.js';
import type {
  AttachedVmm,
  AttachOptions,
  DetachedFiles,
  DetachedLaunchOptions,
  DetachedVmms,
} from '../detached.js';
import { agentTurnKey, attachAgent } from './agent-attach.js';
import { qemuArgs, SOCKETS } from './args.js';
import { QemuControl } from './control.js';
import { QEMU_MISSING, qemuBinary } from './process.js';
import { QmpClient } from './qmp.js';
import { connectVmmSocket } from './sockets.js';

/** The record of a detached QEMU in its state folder. */
export const vmmRecordPath = (stateDir: string) => join(stateDir, 'vmm.json');
export const qemuLogPath = (stateDir: string) => join(stateDir, 'qemu.log');
export const consoleLogPath = (stateDir: string) => join(stateDir, 'console.log');

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
async function launchDetachedQemu(
  spec: Omit<VmmSpec, 'runtime' | 'detached'>,
  { wrap, files = filesIn(spec.stateDir) }: DetachedLaunchOptions = {},
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
  const attached = await AttachedQemu.attach(spec.name, spec.stateDir, {
    timeoutMs: Math.max(1000, deadline.remaining()),
    recordPath: files.record,
  });
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

/**
 * vmkit's side of a detached QEMU for the length of one call: QMP and, on request, the agent.
 * With `turns`, each socket is used in turn with every other vmkit call on this host that asks
 * for turns (QEMU serves one client per socket): attach waits for QMP's, `agent()` for the agent's.
 */
class AttachedQemu extends QemuControl implements AttachedVmm {
  private readonly closers: Array<() => void> = [];

  private constructor(
    readonly name: string,
    readonly stateDir: string,
    readonly record: DetachedRecord,
    qmp: QmpClient,
    private readonly turns: boolean,
  ) {
    super(qmp);
  }

  static async attach(name: string, stateDir: string, options: AttachOptions = {}): Promise<AttachedQemu> {
    const { timeoutMs = 10_000, recordPath = vmmRecordPath(stateDir) } = options;
    const record = readRecord(recordPath);
    if (!isRunning(record))
      throw new VmmStartError(`the VMM of ${name} is not running (record in ${stateDir})`);
    const path = join(stateDir, SOCKETS.qmp);
    const turn = options.turns
      ? await takeTurn(path, timeoutMs, `a turn on the QMP socket of ${name}`, `QMP of ${name}`)
      : undefined;
    let socket: Socket | undefined;
    try {
      socket = await connectVmmSocket(path, timeoutMs, name);
      const qmp = await QmpClient.connect(socket, timeoutMs).catch((error: Error) => {
        // Connected but never greeted: QEMU has not accepted us, another client holds the socket.
        if (!(error instanceof TimeoutError)) throw error;
        throw new VmmStartError(
          `QEMU did not accept a QMP connection of ${name} within ${timeoutMs} ms: another client holds its QMP socket (${path})`,
        );
      });
      const attached = new AttachedQemu(name, stateDir, record, qmp, options.turns === true);
      attached.closers.push(
        () => socket?.destroy(),
        () => turn?.release(),
      );
      return attached;
    } catch (error) {
      socket?.destroy();
      turn?.release();
      throw error;
    }
  }

  consoleTail(): string {
    return consoleTailOf(this.stateDir);
  }

  /**
   * Connects to the guest agent and checks that it answers (see attachAgent). A first boot:
   * pass the boot timeout as `bannerWaitMs`.
   */
  async agent(timeoutMs = 15_000, bannerWaitMs = 2500): Promise<BackdoorChannel> {
    const attached = await attachAgent(this.name, this.stateDir, {
      timeoutMs,
      bannerWaitMs,
      consoleTail: () => this.consoleTail(),
      turn: this.turns ? `an operation on ${this.name}` : undefined,
    });
    this.closers.push(attached.close);
    return attached.channel;
  }

  /** Connects to the serial console (one reader at a time); it closes when the VMM exits. */
  async serialConsole(timeoutMs = 10_000): Promise<Socket> {
    const socket = await connectVmmSocket(join(this.stateDir, SOCKETS.console), timeoutMs, this.name);
    this.closers.push(() => socket.destroy());
    return socket;
  }

  closeControl(): void {
    this.qmp.close();
  }

  /** Disconnects; the VMM runs on. */
  detach(): void {
    this.qmp.close();
    for (const close of this.closers.splice(0)) close();
  }
}

/** The last lines the VMM in `stateDir` printed on its serial console. */
export function consoleTailOf(stateDir: string): string {
  try {
    return tail(readPlainFile(consoleLogPath(stateDir)).toString('utf8'), 2000);
  } catch {
    return '';
  }
}

/** QEMU's detached VMMs (see backends/detached.ts). */
export const qemuDetached: DetachedVmms = {
  launch: launchDetachedQemu,
  attach: (name, stateDir, options) => AttachedQemu.attach(name, stateDir, options),
  attachAgent,
  agentTurnKey,
  files: filesIn,
  consoleLogPath,
  consoleTail: consoleTailOf,
  socketPaths: (stateDir) => Object.values(SOCKETS).map((name) => join(stateDir, name)),
  // The QMP socket's option names the folder exactly: a VMM of another folder never matches.
  processesIn: (stateDir) => processesNaming(`id=qmp,path=${join(stateDir, SOCKETS.qmp)},`),
};

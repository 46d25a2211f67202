import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { SnapshotError, tail, VmmStartError } from '../../errors.js';
import { PRIVATE_FILE, withPrivateUmask } from '../../util/private.js';
import { listenOnce } from '../../util/sockets.js';
import { sparseDigest } from '../../util/sparse.js';
import { sleep, withTimeout } from '../../util/time.js';
import { which } from '../../util/which.js';
import type {
  Backend,
  ExitInfo,
  FileDigest,
  SaveStateOptions,
  Vmm,
  VmmChannels,
  VmmSpec,
} from '../backend.js';
import { MACHINE_OUTBOUND, startRelay } from '../outbound/launch.js';
import { qemuArgs, SOCKETS } from './args.js';
import { QemuControl } from './control.js';
import { QmpClient } from './qmp.js';

export function qemuBinary(): string {
  return process.env.VMKIT_QEMU || 'qemu-system-x86_64';
}

export const QEMU_MISSING = `QEMU is not installed: ${qemuBinary()} was not found on PATH (on Debian: apt-get install qemu-system-x86)`;

/**
 * One running QEMU process with its channels connected: serial console, agent command channel,
 * transfer port and QMP. vmkit listens on every socket before QEMU starts; QEMU connects as the
 * client, so nothing polls for a socket to appear.
 */
export class QemuProcess extends QemuControl implements Vmm {
  readonly exited: Promise<ExitInfo>;
  private exitInfo?: ExitInfo;

  private constructor(
    readonly backend: Backend,
    readonly spec: VmmSpec,
    private readonly child: ChildProcess,
    readonly channels: VmmChannels,
    qmp: QmpClient,
    exited: Promise<ExitInfo>,
    private readonly output: () => string,
  ) {
    super(qmp);
    this.exited = exited;
    exited.then((info) => {
      this.exitInfo = info;
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  stderrTail(): string {
    return tail(this.output(), 2000);
  }

  static async launch(backend: Backend, spec: VmmSpec): Promise<QemuProcess> {
    const binary = await which(qemuBinary());
    if (!binary) throw new VmmStartError(QEMU_MISSING);
    const listeners = {
      console: await listenOnce(join(spec.stateDir, SOCKETS.console)),
      shell: await listenOnce(join(spec.stateDir, SOCKETS.shell)),
      transfer: await listenOnce(join(spec.stateDir, SOCKETS.transfer)),
      qmp: await listenOnce(join(spec.stateDir, SOCKETS.qmp)),
    };
    const args = qemuArgs(spec);
    // The outbound NIC's relay must listen before QEMU connects; it ends with QEMU.
    const relay = spec.hostNic?.internet
      ? await startRelay(spec.stateDir, MACHINE_OUTBOUND, spec.startTimeoutMs).catch((error) => {
          for (const listener of Object.values(listeners)) listener.close();
          throw error;
        })
      : undefined;
    // setpriv ties QEMU's life to ours: if this process is SIGKILLed, the kernel kills QEMU too.
    // Under umask 077: the guest RAM file QEMU makes in /dev/shm, and what it writes, are ours alone.
    const setpriv = await which('setpriv');
    const qemu = withPrivateUmask(binary, args);
    const [program, argv] = setpriv
      ? [setpriv, ['--pdeathsig', 'KILL', '--', qemu.program, ...qemu.args]]
      : [qemu.program, qemu.args];
    const child = spawn(program, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(join(spec.stateDir, 'qemu.log'), { mode: PRIVATE_FILE });
    let stderr = '';
    const onOutput = (chunk: Buffer) => {
      log.write(chunk);
      stderr = tail(stderr + chunk.toString(), 8000);
    };
    child.stdout?.on('data', onOutput);
    child.stderr?.on('data', onOutput);
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once('error', (error) => {
        stderr += `\n${error.message}`;
        resolve({ code: null, signal: null });
      });
      child.once('exit', (code, signal) => resolve({ code, signal }));
    }).then((info) => {
      if (child.pid) spec.runtime.untrackProcess(child.pid);
      relay?.child.kill('SIGKILL');
      for (const listener of Object.values(listeners)) listener.close();
      log.end();
      return info;
    });
    if (child.pid) spec.runtime.trackProcess(child.pid, spec.stateDir, exited);

    const describeExit = (info: ExitInfo) =>
      new VmmStartError(
        `QEMU for machine ${spec.name} exited during start-up (${info.signal ? `signal ${info.signal}` : `status ${info.code}`})` +
          `\ncommand: ${binary} ${args.join(' ')}\nQEMU said:\n${tail(stderr, 1500) || '(nothing)'}`,
      );
    const died = exited.then((info) => Promise.reject(describeExit(info)));
    died.catch(() => {});
    const connected = Promise.all([
      listeners.console.accepted,
      listeners.shell.accepted,
      listeners.transfer.accepted,
      listeners.qmp.accepted,
    ]);
    try {
      const [consoleSocket, shell, transfer, qmpSocket] = await withTimeout(
        Promise.race([connected, died]),
        spec.startTimeoutMs,
        `QEMU for machine ${spec.name} to connect its sockets`,
        { lastState: () => tail(stderr, 500) },
      );
      const qmp = await Promise.race([QmpClient.connect(qmpSocket, spec.startTimeoutMs), died]);
      return new QemuProcess(
        backend,
        spec,
        child,
        { console: consoleSocket, agent: shell, transfer },
        qmp,
        exited,
        () => stderr,
      );
    } catch (error) {
      // A QEMU that rejected its command line closes its sockets as it exits: its own words say why.
      const exitedAlone = await Promise.race([exited, sleep(300).then(() => undefined)]);
      child.kill('SIGKILL');
      await exited;
      throw exitedAlone ? describeExit(exitedAlone) : error;
    }
  }

  /** A path that reads a file QEMU holds open, also after it was unlinked. */
  private async openFileHandle(path: string): Promise<string> {
    const fdDir = `/proc/${this.pid}/fd`;
    for (const fd of await readdir(fdDir)) {
      const target = await readlink(join(fdDir, fd)).catch(() => '');
      if (target === path || target === `${path} (deleted)`) return join(fdDir, fd);
    }
    throw new SnapshotError(`QEMU (pid ${this.pid}) does not hold ${path} open`);
  }

  async saveState(dir: string, options: SaveStateOptions): Promise<Record<string, FileDigest>> {
    await this.writeState(join(dir, 'state'), {
      ramShared: options.ramInFile,
      timeoutMs: options.timeoutMs,
      what: `saving ${this.spec.name}`,
    });
    if (!options.ramInFile) return {};
    // Copied sparse and digested in one pass: guest pages never touched take no room or time.
    const ram = await sparseDigest(await this.openFileHandle(options.ramPath), join(dir, 'ram'));
    return { ram: { digest: ram.digest, bytes: ram.bytes } };
  }

  loadState(path: string, options: { ramInFile: boolean; timeoutMs: number }): Promise<void> {
    return this.readState(path, { ramShared: options.ramInFile, timeoutMs: options.timeoutMs });
  }

  closeControl(): void {
    this.qmp.close();
  }

  async kill(): Promise<ExitInfo> {
    if (!this.exitInfo) this.child.kill('SIGKILL');
    return this.exited;
  }
}

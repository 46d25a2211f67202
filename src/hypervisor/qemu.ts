import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { ConfigError, tail, VmkitError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { listenOnce } from '../util/sockets.js';
import { sleep, withTimeout } from '../util/time.js';
import { which } from '../util/which.js';
import type { Accel } from './accel.js';
import { trackProcess, untrackProcess } from './processes.js';
import { QmpClient } from './qmp.js';

export interface NicSpec {
  /** Unix socket of the virtual switch this NIC plugs into; without one the NIC is unplugged. */
  socketPath?: string;
  mac: string;
}

export interface QemuSpec {
  name: string;
  stateDir: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  memoryMiB: number;
  cpus: number;
  accel: Accel;
  nics: NicSpec[];
  /**
   * Guest RAM lives in this file. `share: true` writes guest memory into it (a machine that may
   * be snapshotted); `share: false` maps it copy-on-write (a clone of a snapshot).
   */
  memory: { path: string; share: boolean };
  /** qcow2 images, attached as virtio disks in order (/dev/vda, /dev/vdb, ...). */
  disks: string[];
  /** Start paused, waiting for an incoming migration (a restore). */
  incoming?: boolean;
  /** Appended to the generated command line, for callers that know QEMU. */
  extraArgs?: string[];
  startTimeoutMs: number;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export function qemuBinary(): string {
  return process.env.VMKIT_QEMU || 'qemu-system-x86_64';
}

let versionLine: Promise<string> | undefined;

/** QEMU's own version line; snapshots record it because migration streams are only safe between equal versions. */
export function qemuVersion(): Promise<string> {
  versionLine ??= runTool(qemuBinary(), ['--version'], { timeoutMs: 30_000 }).then(
    (result) => result.stdout.split('\n')[0]?.trim() ?? 'unknown',
    (error: Error) => {
      versionLine = undefined;
      throw new ConfigError(`cannot run ${qemuBinary()} --version: ${error.message.split('\n')[0]}`);
    },
  );
  return versionLine;
}

/** Socket file names inside a machine's state folder: short, since the path limit is 107 bytes. */
const SOCKETS = { console: 'con.sock', shell: 'sh.sock', transfer: 'xfer.sock', qmp: 'qmp.sock' } as const;

/** A value inside a QEMU option string, where a comma must be doubled. */
const opt = (value: string) => value.replaceAll(',', ',,');

/** The QEMU command line for a spec, as an argument vector. */
export function qemuArgs(spec: QemuSpec): string[] {
  const sock = (name: keyof typeof SOCKETS) => opt(join(spec.stateDir, SOCKETS[name]));
  const share = spec.memory.share ? 'on' : 'off';
  const options: Array<[string, string?]> = [
    ['-name', spec.name],
    [
      '-object',
      `memory-backend-file,id=ram0,size=${spec.memoryMiB}M,mem-path=${opt(spec.memory.path)},share=${share}`,
    ],
    ['-machine', 'pc,memory-backend=ram0'],
    ['-accel', spec.accel],
    ...(spec.accel === 'kvm' ? [['-cpu', 'host'] as [string, string]] : []),
    ['-m', String(spec.memoryMiB)],
    ['-smp', String(spec.cpus)],
    ['-nodefaults'],
    ['-no-user-config'],
    ['-display', 'none'],
    ['-no-reboot'],
    ['-kernel', spec.kernel],
    ['-initrd', spec.initrd],
    ['-append', spec.cmdline],
    ['-chardev', `socket,id=console,path=${sock('console')}`],
    ['-serial', 'chardev:console'],
    ['-chardev', `socket,id=qmp,path=${sock('qmp')}`],
    ['-mon', 'chardev=qmp,mode=control'],
    ['-device', 'virtio-serial-pci,id=serial0'],
    // The backdoor's command channel is a port, not a console: QEMU drops console bytes when
    // the host reads slowly, and throttles ports instead.
    ['-chardev', `socket,id=shell,path=${sock('shell')}`],
    ['-device', 'virtserialport,chardev=shell,name=vmkit.shell'],
    ['-chardev', `socket,id=transfer,path=${sock('transfer')}`],
    ['-device', 'virtserialport,chardev=transfer,name=vmkit.transfer'],
    ['-device', 'virtio-rng-pci'],
  ];
  spec.nics.forEach((nic, index) => {
    const backend = nic.socketPath
      ? `stream,id=net${index},server=off,addr.type=unix,addr.path=${opt(nic.socketPath)}`
      : `hubport,id=net${index},hubid=${1000 + index}`; // a hub with nothing else on it
    options.push(['-netdev', backend], ['-device', `virtio-net-pci,netdev=net${index},mac=${nic.mac}`]);
  });
  spec.disks.forEach((disk, index) => {
    options.push(['-drive', `file=${opt(disk)},if=virtio,format=qcow2,id=disk${index}`]);
  });
  if (spec.incoming) options.push(['-incoming', 'defer']);
  const args = options.flatMap(([flag, value]) => (value === undefined ? [flag] : [flag, value]));
  return [...args, ...(spec.extraArgs ?? [])];
}

/**
 * One running QEMU process with its channels connected: serial console, backdoor command
 * channel, transfer port and QMP. vmkit listens on every socket before QEMU starts; QEMU
 * connects as the client, so nothing polls for a socket to appear.
 */
export class QemuProcess {
  readonly exited: Promise<ExitInfo>;
  private exitInfo?: ExitInfo;

  private constructor(
    readonly spec: QemuSpec,
    private readonly child: ChildProcess,
    readonly sockets: { console: Socket; shell: Socket; transfer: Socket },
    readonly qmp: QmpClient,
    exited: Promise<ExitInfo>,
    private readonly output: () => string,
  ) {
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

  static async launch(spec: QemuSpec): Promise<QemuProcess> {
    const binary = await which(qemuBinary());
    if (!binary) {
      throw new ConfigError(
        `QEMU is not installed: ${qemuBinary()} was not found on PATH (on Debian: apt-get install qemu-system-x86)`,
      );
    }
    const listeners = {
      console: await listenOnce(join(spec.stateDir, SOCKETS.console)),
      shell: await listenOnce(join(spec.stateDir, SOCKETS.shell)),
      transfer: await listenOnce(join(spec.stateDir, SOCKETS.transfer)),
      qmp: await listenOnce(join(spec.stateDir, SOCKETS.qmp)),
    };
    const args = qemuArgs(spec);
    // setpriv ties QEMU's life to ours: if this process is SIGKILLed, the kernel kills QEMU too.
    const setpriv = await which('setpriv');
    const [program, argv] = setpriv
      ? [setpriv, ['--pdeathsig', 'KILL', '--', binary, ...args]]
      : [binary, args];
    const child = spawn(program, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(join(spec.stateDir, 'qemu.log'));
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
      if (child.pid) untrackProcess(child.pid);
      for (const listener of Object.values(listeners)) listener.close();
      log.end();
      return info;
    });
    if (child.pid) trackProcess(child.pid, spec.stateDir, exited);

    const describeExit = (info: ExitInfo) =>
      new VmkitError(
        `QEMU for machine ${spec.name} exited during start-up (${info.signal ? `signal ${info.signal}` : `status ${info.code}`})` +
          `\ncommand: ${binary} ${args.join(' ')}\nQEMU said:\n${tail(stderr, 1500) || '(nothing)'}`,
      );
    const connected = Promise.all([
      listeners.console.accepted,
      listeners.shell.accepted,
      listeners.transfer.accepted,
      listeners.qmp.accepted,
    ]);
    try {
      const [consoleSocket, shell, transfer, qmpSocket] = await withTimeout(
        Promise.race([connected, exited.then((info) => Promise.reject(describeExit(info)))]),
        spec.startTimeoutMs,
        `QEMU for machine ${spec.name} to connect its sockets`,
        () => tail(stderr, 500),
      );
      const qmp = await Promise.race([
        QmpClient.connect(qmpSocket, spec.startTimeoutMs),
        exited.then((info) => Promise.reject(describeExit(info))),
      ]);
      return new QemuProcess(
        spec,
        child,
        { console: consoleSocket, shell, transfer },
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

  /**
   * The path through /proc of a file QEMU holds open, found by the path it was opened with;
   * works after the file was unlinked.
   */
  async openFilePath(path: string): Promise<string> {
    const fdDir = `/proc/${this.pid}/fd`;
    for (const fd of await readdir(fdDir)) {
      const target = await readlink(join(fdDir, fd)).catch(() => '');
      if (target === path || target === `${path} (deleted)`) return join(fdDir, fd);
    }
    throw new VmkitError(`QEMU (pid ${this.pid}) does not hold ${path} open`);
  }

  /** Kills QEMU at once and waits until it is gone. */
  async kill(): Promise<ExitInfo> {
    if (!this.exitInfo) this.child.kill('SIGKILL');
    return this.exited;
  }
}

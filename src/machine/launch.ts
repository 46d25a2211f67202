import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { MachineCrashedError, VmkitError } from '../errors.js';
import { BackdoorChannel } from '../guest/backdoor.js';
import { SerialConsole } from '../guest/console.js';
import type { AccelDecision } from '../hypervisor/accel.js';
import { currentRunDir } from '../hypervisor/processes.js';
import { QemuProcess } from '../hypervisor/qemu.js';
import type { VirtualSwitch } from '../network/switch.js';
import { elapsedMs, sleep } from '../util/time.js';
import type { MachineConfig } from './config.js';
import { Machine, type MachineInternals } from './machine.js';

export interface LaunchPlan {
  name: string;
  config: MachineConfig;
  accel: AccelDecision;
  /** The switch each NIC plugs into; a NIC without one is left unconnected. */
  switches: Array<VirtualSwitch | undefined>;
  timeoutMs: number;
  commandTimeoutMs: number;
  keepState: () => boolean;
  log: (line: string) => void;
  signal?: AbortSignal;
  /** Creates what the machine needs in its fresh state folder: the RAM file and disk images. */
  prepare(stateDir: string): Promise<{ memory: MachineInternals['memory']; disks: string[] }>;
  /** Start paused and take the guest from an incoming migration (a restore). */
  incoming: boolean;
  /** Brings the guest to the point where the backdoor answers. */
  ready(vmm: QemuProcess, backdoor: BackdoorChannel): Promise<void>;
  /** Run over the backdoor before the machine is handed out: hostname, network, clock. */
  setupScript: string;
  /** How this machine came to be, for its log line: "booted", "restored". */
  verb: string;
}

/** A fresh state folder for a machine: its name, or name.1, name.2, ... when that is taken. */
async function newStateDir(name: string): Promise<string> {
  const runDir = currentRunDir();
  for (let suffix = 0; ; suffix++) {
    const dir = join(runDir, suffix === 0 ? name : `${name}.${suffix}`);
    try {
      await mkdir(dir);
      return dir;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}

/** Starts QEMU for a plan and turns it into a Machine, or cleans up everything it made. */
export async function launchMachine(plan: LaunchPlan): Promise<Machine> {
  const { name, config } = plan;
  const stateDir = await newStateDir(name);
  const console = new SerialConsole(join(stateDir, 'console.log'));
  const started = performance.now();
  let vmm: QemuProcess | undefined;
  let unlinkMemory: string | undefined;
  try {
    const prepared = await plan.prepare(stateDir);
    if (prepared.memory.share) unlinkMemory = prepared.memory.path;
    vmm = await QemuProcess.launch({
      name,
      stateDir,
      kernel: config.image.kernel,
      initrd: config.image.initrd,
      cmdline: config.image.cmdline,
      memoryMiB: config.memoryMiB,
      cpus: config.cpus,
      accel: config.accel,
      nics: config.macs.map((mac, index) => ({ socketPath: plan.switches[index]?.socketPath, mac })),
      memory: prepared.memory,
      disks: prepared.disks,
      incoming: plan.incoming,
      extraArgs: config.qemuArgs,
      startTimeoutMs: plan.timeoutMs,
    });
    // QEMU has mapped the RAM file; unlinked, it can never be left behind.
    if (unlinkMemory) await rm(unlinkMemory, { force: true });
    unlinkMemory = undefined;
    const launched = vmm;
    const abort = () => void launched.kill();
    plan.signal?.addEventListener('abort', abort, { once: true });
    if (plan.signal?.aborted) abort();
    console.attach(vmm.sockets.console);
    const backdoor = new BackdoorChannel(name, vmm.sockets.shell, vmm.sockets.transfer, () => console.tail());
    let machine: Machine | undefined;
    launched.exited.then((info) => {
      if (machine) return; // from now on the machine reports its own death
      const stderr = launched.stderrTail().trim();
      backdoor.fail(
        new MachineCrashedError(
          name,
          `QEMU exited before the machine was ready (${info.signal ?? `status ${info.code}`})${stderr ? `; QEMU said: ${stderr}` : ''}`,
          console.tail(),
        ),
      );
    });
    await plan.ready(vmm, backdoor);
    plan.signal?.removeEventListener('abort', abort);
    const readyMs = elapsedMs(started);
    plan.log(`${plan.verb}: backdoor up after ${readyMs} ms`);
    machine = new Machine({
      name,
      stateDir,
      accel: plan.accel,
      config,
      vmm,
      backdoor,
      console,
      commandTimeoutMs: plan.commandTimeoutMs,
      keepState: plan.keepState,
      readyMs,
      memory: prepared.memory,
      disks: prepared.disks,
    });
    const ready = machine;
    await ready.succeed(plan.setupScript, { timeoutMs: 30_000 }).catch(async (error: Error) => {
      await ready.close();
      throw new VmkitError(`machine ${name} ${plan.verb} but its setup failed: ${error.message}`);
    });
    return ready;
  } catch (error) {
    // When QEMU died on its own, what it printed explains the failure better than a closed socket.
    const died = vmm && (await Promise.race([vmm.exited.then(() => true), sleep(200).then(() => false)]));
    const stderr = vmm?.stderrTail().trim();
    await vmm?.kill();
    vmm?.qmp.close();
    const explained =
      died && stderr && !(error instanceof MachineCrashedError)
        ? new MachineCrashedError(name, `QEMU exited before the machine was ready: ${stderr}`, console.tail())
        : error;
    console.close();
    if (unlinkMemory) await rm(unlinkMemory, { force: true });
    if (!plan.keepState()) await rm(stateDir, { recursive: true, force: true });
    throw explained;
  }
}

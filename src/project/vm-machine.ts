import { chooseAccel } from '../backends/accel.js';
import { HANDOVER_BANNER_WAIT_MS } from '../backends/detached.js';
import { backendNamed } from '../backends/index.js';
import { profileNamed } from '../guest/profiles/index.js';
import { attachedMachine } from '../machine/attached.js';
import type { Machine } from '../machine/machine.js';
import { isRunning, readRecord } from '../runtime/detached.js';
import { Runtime } from '../runtime/runtime.js';
import { connectHub, type ProjectVm, VmDownError } from './vm-handle.js';
import { vmImage } from './vmm.js';
import { projectVmms } from './vmms.js';

export interface VmMachineOptions {
  /** How long to wait for the VM's running commands (a shell elsewhere) to end; default 30 s. */
  timeoutMs?: number;
  /** How long a command may take when its call gives none; default 60 s. */
  commandTimeoutMs?: number;
}

/**
 * The running project VM as a Machine (ProjectVmHandle.machine): its hub lends it the VM's agent
 * until it closes. Meanwhile `vmkit exec`, `shell` and `sync` of the VM are refused, naming this
 * process; closing the machine gives the agent back and leaves the VM running.
 */
export async function vmMachine(pvm: ProjectVm, options: VmMachineOptions = {}): Promise<Machine> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const hub = await connectHub(pvm);
  const runtime = new Runtime();
  const letGo = () => {
    hub.close(); // the hub takes its agent back
    void runtime.close();
  };
  try {
    const image = await vmImage(pvm, () => {});
    const accel = await chooseAccel('auto', runtime);
    await hub.lend(`a Machine in process ${process.pid}`, timeoutMs);
    const vmms = projectVmms();
    const record = readRecord(vmms.files(pvm.run).record);
    if (!isRunning(record)) throw new VmDownError(pvm);
    const consoleTail = () => vmms.consoleTail(pvm.run);
    const agent = await vmms.attachAgent(pvm.vm.name, pvm.run, {
      timeoutMs,
      bannerWaitMs: HANDOVER_BANNER_WAIT_MS, // the hub let go a moment ago
      consoleTail,
    });
    const backend = backendNamed('qemu');
    return await attachedMachine({
      name: pvm.vm.name,
      config: {
        backend: backend.name,
        image,
        memoryMiB: pvm.vm.memoryMiB,
        cpus: pvm.vm.cpus,
        accel: accel.accel,
        nics: 0,
        macs: [],
        disks: [],
        qemuArgs: [],
      },
      accel,
      backend,
      runtime,
      profile: profileNamed(image.profile),
      agent,
      pid: record.pid,
      isRunning: () => isRunning(readRecord(vmms.files(pvm.run).record)),
      consoleLog: vmms.consoleLogPath(pvm.run),
      owner: `it is project VM ${pvm.vm.name} (vmkit down|snapshot|restore ${pvm.vm.name})`,
      release: letGo,
      commandTimeoutMs: options.commandTimeoutMs,
    }).catch((error: Error) => {
      agent.close();
      throw error;
    });
  } catch (error) {
    letGo();
    throw error;
  }
}

import { chooseAccel } from '../backends/accel.js';
import { profileNamed } from '../guest/profiles/index.js';
import { attachedMachine } from '../machine/attached.js';
import type { Machine } from '../machine/machine.js';
import { isRunning, readRecord } from '../runtime/detached.js';
import type { Runtime } from '../runtime/runtime.js';
import { type ExecFleet, execTarget } from './exec.js';
import { audit } from './state/audit.js';
import type { FleetStore } from './state/store.js';
import type { AgentLease } from './vmm/agents.js';
import { vmmFiles } from './vmm/records.js';
import { guestImage } from './vmm/vm.js';
import { fleetBackend, fleetVmms } from './vmm/vmms.js';

/** What this needs of the Fleet that calls it (fleet.ts). */
export interface MachineFleet extends ExecFleet {
  readonly store: Pick<FleetStore, 'touch' | 'pool'>;
  readonly runtime: Runtime;
}

export interface InstanceMachineOptions {
  /** How long to wait for the instance's agent (another process may hold it); default 60 s. */
  timeoutMs?: number;
  /** How long a command may take when its call gives none; default 60 s. */
  commandTimeoutMs?: number;
}

/**
 * A Running instance as a Machine (Fleet.machine): its agent is held until the machine closes,
 * so the instance's other commands wait for their turn meanwhile, as behind a `vmkit fleet
 * instance shell`. Every command is audited, as an exec is. The fleet still owns the instance:
 * closing the machine leaves it running, and sleep, stop and snapshots stay the fleet's.
 */
export async function instanceMachine(
  fleet: MachineFleet,
  address: string,
  options: InstanceMachineOptions = {},
): Promise<Machine> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const on = execTarget(fleet, address, 'machine');
  const instance = fleet.instance(address);
  const pool = fleet.store.pool(instance.tenant, instance.pool);
  const ctx = { fleetDir: fleet.dir, runtime: fleet.runtime };
  const image = await guestImage(ctx, instance.revision, pool, `instance ${instance.path}`);
  const accel = await chooseAccel('auto', fleet.runtime);
  const lease = await holdAgent(fleet, on, timeoutMs);
  const record = readRecord(vmmFiles(on.dir).record);
  const note = (action: string, detail: string, outcome: 'ok' | 'failed' = 'ok') =>
    audit(fleet.dir, { tenant: instance.tenant, action, target: instance.path, outcome, detail });
  try {
    const backend = fleetBackend();
    const machine = await attachedMachine({
      name: instance.path,
      config: {
        backend: backend.name,
        image,
        memoryMiB: pool.memoryMiB,
        cpus: pool.vcpus,
        accel: accel.accel,
        nics: 1,
        macs: [instance.mac],
        disks: [],
        qemuArgs: [],
      },
      accel,
      backend,
      runtime: fleet.runtime,
      profile: profileNamed(image.profile),
      agent: { channel: lease.channel, close: lease.release },
      pid: record?.pid ?? instance.pid ?? 0,
      isRunning: () => isRunning(readRecord(vmmFiles(on.dir).record)),
      consoleLog: fleetVmms().consoleLogPath(on.dir),
      owner: `it is fleet instance ${instance.path}, which the fleet starts, sleeps and stops (vmkit fleet instance stop|sleep ${instance.path})`,
      commandTimeoutMs: options.commandTimeoutMs,
    });
    note('machine', 'attached a Machine');
    machine.observeCommands((command) => ({
      ended: (outcome) =>
        note(
          'exec',
          `${command} -> ${outcome.error ? outcome.error.message.split('\n')[0] : `status ${outcome.exitCode}`}`,
          outcome.error ? 'failed' : 'ok',
        ),
    }));
    return machine;
  } catch (error) {
    lease.release();
    throw error;
  }
}

/**
 * Takes the instance's agent as one more user of the fleet's shared attachment, until `release`:
 * the commands of this process share it meanwhile; other processes wait for their turn.
 */
function holdAgent(
  fleet: MachineFleet,
  on: ReturnType<typeof execTarget>,
  timeoutMs: number,
): Promise<AgentLease & { release: () => void }> {
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  return new Promise((resolve, reject) => {
    fleet.agents
      .use(on.dir, on.name, timeoutMs, on.admit, async (lease) => {
        resolve({ ...lease, release });
        await released;
      })
      .catch(reject);
  });
}

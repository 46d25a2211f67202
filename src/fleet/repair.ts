import type { InstanceState } from './state/lifecycle.js';
import type { Instance } from './state/model.js';
import { type FleetStore, intentAlive } from './state/store.js';
import {
  hasSleepState,
  instanceDir,
  killVm,
  removeSleepState,
  removeVmFiles,
  vmProcesses,
  vmStatus,
  withVm,
} from './vmm/vm.js';

/** What repair did to one instance. */
export interface Repair {
  path: string;
  from: InstanceState;
  /** The state it was left in, or `removed` (an interrupted create or destroy). */
  to: InstanceState | 'removed';
  reason: string;
}

/** What repair needs from a live fleet (a runtime, the guest's image) for what it completes. */
export interface RepairHooks {
  /** Redoes the guest set-up of a wake cut off after its guest resumed, and removes the sleep state. */
  finishWake?(instance: Instance): Promise<void>;
}

/** Whether the recorded state and the processes disagree, or an operation was cut off. */
export function needsRepair(instance: Instance, dir: string): boolean {
  if (instance.intent) return !intentAlive(instance);
  if (instance.state === 'Destroyed') return true; // a destroy cut off after its last step
  const holds = instance.state === 'Running' || instance.state === 'Warm';
  return holds !== vmProcesses(dir).length > 0;
}

/**
 * Brings one instance back to a state that matches what exists: an operation cut off (its
 * process killed, or failed) is rolled back or completed from what it left on disk, and an
 * instance whose VMM is gone becomes Stopped. The reason says what happened.
 */
export async function repairInstance(
  store: FleetStore,
  instance: Instance,
  cause: string,
  hooks: RepairHooks = {},
): Promise<Repair> {
  const dir = instanceDir(store.dir, instance.seq);
  const operation = instance.intent?.operation;
  const alive = vmProcesses(dir).length > 0;
  const slept = hasSleepState(dir);
  const done = (to: InstanceState | 'removed', reason: string, keepPid = false): Repair => {
    if (to === 'removed') store.deleteInstance(instance.seq);
    else store.finish(instance.seq, to, { reason, ...(keepPid ? {} : { pid: null, pidTicks: null }) });
    return { path: instance.path, from: instance.state, to, reason };
  };
  const ended = async () => ((await killVm(dir)) > 0 ? '; its VMM was ended' : '');
  switch (operation) {
    case 'arrive':
    case 'create':
    case 'destroy': {
      if (operation === 'arrive' && slept)
        return done('Sleeping', `${cause}; the sleep state it adopts was complete`);
      // An arrival cut off before its state was whole goes, as a create does.
      const killed = await ended();
      removeVmFiles(dir);
      return done('removed', `${cause}: the instance's files were removed${killed}`);
    }
    case 'start':
      return done(instance.intent?.from ?? 'Stopped', `${cause}${await ended()}`);
    case 'stop': {
      const killed = await ended(); // first: the VMM's folder is only changed once nothing of it runs
      removeSleepState(dir, true);
      return done('Stopped', `${cause}${killed}`);
    }
    case 'warm':
    case 'resume': {
      if (alive) {
        const status = await vmStatus(dir, instance.path).catch(() => undefined);
        if (status === 'paused') return done('Warm', `${cause}; its VMM is paused`, true);
        if (status === 'running') return done('Running', `${cause}; its VMM is running`, true);
      }
      return done('Stopped', `${cause}${await ended()}`);
    }
    case 'sleep': {
      if (slept) return done('Sleeping', `${cause}; its sleep state was complete${await ended()}`);
      if (alive && (await resumeAfterSave(dir, instance.path))) {
        removeSleepState(dir, false); // a partial one: vmkit's part now, the VMM's folder once it ends
        return done('Running', `${cause} before its state was saved; the VMM runs on`, true);
      }
      return done('Stopped', `${cause} and no sleep state was saved${await ended()}`);
    }
    case 'wake': {
      // Once the restored guest ran, it is the instance: it may have written its data disk, so
      // going back to the sleep state could lose those writes or contradict the disk.
      if (alive && (await vmStatus(dir, instance.path).catch(() => undefined)) === 'running') {
        const redone = hooks.finishWake
          ? await hooks.finishWake(instance).then(
              () => '; its guest set-up was redone',
              (error: Error) => `; its guest set-up could not be redone: ${error.message}`,
            )
          : '';
        removeSleepState(dir, false);
        const [record] = vmProcesses(dir);
        if (record) {
          const reason = `${cause} after its guest resumed: the wake was finished${redone}`;
          store.finish(instance.seq, 'Running', { reason, pid: record.pid, pidTicks: record.startTicks });
          return { path: instance.path, from: instance.state, to: 'Running', reason };
        }
      }
      return done(slept ? 'Sleeping' : 'Stopped', `${cause}${await ended()}`);
    }
    default: {
      if (instance.state === 'Destroyed') {
        const killed = await ended();
        removeVmFiles(dir);
        return done('removed', `${cause}: destroyed, its record removed${killed}`);
      }
      if ((instance.state === 'Running' || instance.state === 'Warm') && !alive) {
        await killVm(dir); // its RAM file in /dev/shm and its cgroups outlive it otherwise
        removeSleepState(dir, true);
        return done('Stopped', `${cause}: its VMM (pid ${instance.pid ?? '?'}) is gone`);
      }
      return done(instance.state, `${cause}: a VMM that should not run was ended${await ended()}`, false);
    }
  }
}

/**
 * A VMM cut off while saving its state is paused, perhaps still migrating (QEMU carries a
 * migration on without its caller, then leaves the guest paused): cancel it, then resume.
 */
async function resumeAfterSave(dir: string, name: string): Promise<boolean> {
  return withVm(dir, name, (vm) => vm.abortWriteState()).then(
    () => true,
    () => false,
  );
}

/** Repairs every instance whose operation was cut off or whose VMM is not where the state says. */
export async function repairFleet(store: FleetStore, hooks: RepairHooks = {}): Promise<Repair[]> {
  const repairs: Repair[] = [];
  for (const instance of store.listInstances()) {
    const dir = instanceDir(store.dir, instance.seq);
    if (!needsRepair(instance, dir)) continue;
    const claimed = store.claimForRepair(instance.seq, (current) => needsRepair(current, dir));
    if (!claimed) continue;
    const cause = claimed.intent
      ? `${claimed.intent.operation} by pid ${claimed.intent.pid} was interrupted`
      : 'state check';
    repairs.push(await repairInstance(store, claimed, cause, hooks));
  }
  return repairs;
}

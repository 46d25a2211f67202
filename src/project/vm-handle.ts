import { join } from 'node:path';
import { ConfigError, VmkitError } from '../errors.js';
import { type DetachedRecord, isRunning, readRecord } from '../runtime/detached.js';
import { Runtime } from '../runtime/runtime.js';
import type { ProjectConfig, VmConfig } from './config.js';
import { HubClient } from './hub-client.js';
import { hasAgent } from './media-config.js';
import { runDir } from './state.js';
import { projectVmms } from './vmms.js';

/** A project VM as the commands see it: its config and its folders. */
export interface ProjectVm {
  project: ProjectConfig;
  vm: VmConfig;
  /** `.vmkit/<vm>/`: disks, state, snapshots. */
  dir: string;
  /** Sockets, the VMM's and the hub's records, logs. */
  run: string;
  /** Whose host facts (the accelerator) and shared image builds the VM's commands use. */
  runtime: Runtime;
}

/**
 * The handle on a project VM. The CLI hands in the runtime of its command; a handle made without
 * one gets a runtime of its own (it makes no run folder: project VMs keep their state in `dir`).
 */
export function projectVm(project: ProjectConfig, vm: VmConfig, runtime = new Runtime()): ProjectVm {
  const dir = join(project.root, '.vmkit', vm.name);
  return { project, vm, dir, run: runDir(dir), runtime };
}

export function vmmRecord(pvm: ProjectVm): DetachedRecord | undefined {
  const record = readRecord(projectVmms().files(pvm.run).record);
  return isRunning(record) ? record : undefined;
}

/** A connection to the running VM's hub, or an error saying the VM is down (with `vmkit up`). */
export async function connectHub(pvm: ProjectVm): Promise<HubClient> {
  if (!hasAgent(pvm.vm.image)) throw new NoAgentError(pvm);
  if (!vmmRecord(pvm)) {
    throw new VmDownError(pvm);
  }
  return HubClient.connect(pvm.run, pvm.vm.name);
}

/** Runs `work` with a connection to the running VM's hub, closed afterwards. */
export async function withHub<T>(pvm: ProjectVm, work: (hub: HubClient) => Promise<T>): Promise<T> {
  const hub = await connectHub(pvm);
  try {
    return await work(hub);
  } finally {
    hub.close();
  }
}

export class VmDownError extends VmkitError {
  override name = 'VmDownError';
  constructor(pvm: ProjectVm) {
    super(`VM ${pvm.vm.name} is not running (start it with: vmkit up ${pvm.vm.name})`);
  }
}

/** A command that needs vmkit's agent, against a media VM whose guest does not run it. */
export class NoAgentError extends ConfigError {
  override name = 'NoAgentError';
  constructor(pvm: ProjectVm) {
    super(
      `VM ${pvm.vm.name} boots media without vmkit's agent (no image.agent in the config): exec, shell, sync, run-cmd, test and provision need it; up, down, status, snapshots and reset work, and its serial console is ${join(pvm.run, 'con.sock')}`,
    );
  }
}

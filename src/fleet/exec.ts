import type { RawResult } from '../agent/backdoor.js';
import { audit } from './state/audit.js';
import { RefusedError } from './state/lifecycle.js';
import type { Instance } from './state/model.js';
import type { FleetStore } from './state/store.js';
import type { InstanceAgents } from './vmm/agents.js';
import { instanceDir } from './vmm/vm.js';
import { type ExecTarget, execVm, type OutputStreams, shellVm } from './vmm/vm-exec.js';

/** Commands in Running instances (Fleet.exec and Fleet.shell), each one audited. */

/** What these need of the Fleet that calls them (fleet.ts, which imports this file). */
export interface ExecFleet {
  readonly dir: string;
  readonly store: Pick<FleetStore, 'touch'>;
  readonly agents: InstanceAgents;
  instance(address: string): Instance;
}

function requireRunning(fleet: ExecFleet, address: string, what: string): Instance {
  const instance = fleet.instance(address);
  if (instance.state !== 'Running') {
    throw new RefusedError(
      `instance ${instance.path}: ${what} needs a Running instance, it is ${instance.state}`,
    );
  }
  if (instance.intent) {
    throw new RefusedError(
      `instance ${instance.path}: ${what} refused, the instance is under a ${instance.intent.operation} (pid ${instance.intent.pid})`,
    );
  }
  fleet.store.touch(instance.seq);
  return instance;
}

/** Checked again once the call had to wait for the instance's agent: it may be going away. */
export function execTarget(fleet: ExecFleet, address: string, what: string): ExecTarget {
  const instance = requireRunning(fleet, address, what);
  return {
    agents: fleet.agents,
    dir: instanceDir(fleet.dir, instance.seq),
    name: instance.path,
    admit: () => void requireRunning(fleet, address, what),
  };
}

export async function execInstance(
  fleet: ExecFleet,
  address: string,
  command: string[],
  timeoutMs: number,
  stream?: OutputStreams,
): Promise<RawResult> {
  const on = execTarget(fleet, address, 'exec');
  const instance = fleet.instance(address);
  const result = await execVm(on, command, timeoutMs, stream);
  audit(fleet.dir, {
    tenant: instance.tenant,
    action: 'exec',
    target: instance.path,
    outcome: 'ok',
    detail: `${command.join(' ')} -> status ${result.status}`,
  });
  return result;
}

export function shellInstance(
  fleet: ExecFleet,
  address: string,
  next: () => Promise<string | undefined>,
  onResult: (script: string, result: RawResult) => void,
  timeoutMs: number,
): Promise<number> {
  const on = execTarget(fleet, address, 'shell');
  const instance = fleet.instance(address);
  const onEach = (script: string, result: RawResult) => {
    audit(fleet.dir, {
      tenant: instance.tenant,
      action: 'shell',
      target: instance.path,
      outcome: 'ok',
      detail: `${script} -> status ${result.status}`,
    });
    onResult(script, result);
  };
  return shellVm(on, next, onEach, timeoutMs);
}

import type { RawResult } from '../agent/backdoor.js';
import { audit } from './audit.js';
import { RefusedError } from './lifecycle.js';
import type { Instance } from './model.js';
import type { FleetStore } from './store.js';
import { instanceDir } from './vm.js';
import { execVm, type OutputStreams, shellVm } from './vm-exec.js';

/** Commands in Running instances (Fleet.exec and Fleet.shell), each one audited. */

/** What these need of the Fleet that calls them (fleet.ts, which imports this file). */
export interface ExecFleet {
  readonly dir: string;
  readonly store: Pick<FleetStore, 'touch'>;
  instance(address: string): Instance;
}

function requireRunning(fleet: ExecFleet, address: string, what: string): Instance {
  const instance = fleet.instance(address);
  if (instance.state !== 'Running') {
    throw new RefusedError(
      `instance ${instance.path}: ${what} needs a Running instance, it is ${instance.state}`,
    );
  }
  fleet.store.touch(instance.seq);
  return instance;
}

export async function execInstance(
  fleet: ExecFleet,
  address: string,
  command: string[],
  timeoutMs: number,
  stream?: OutputStreams,
): Promise<RawResult> {
  const instance = requireRunning(fleet, address, 'exec');
  const dir = instanceDir(fleet.dir, instance.seq);
  const result = await execVm(dir, instance.path, command, timeoutMs, stream);
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
  const instance = requireRunning(fleet, address, 'shell');
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
  return shellVm(instanceDir(fleet.dir, instance.seq), instance.path, next, onEach, timeoutMs);
}

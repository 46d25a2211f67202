import type { VmmEvent, VmmMonitor } from '../backends/backend.js';
import { CapabilityError } from '../errors.js';
import { waitWithin } from '../util/time.js';
import { checkCall } from './calls.js';
import type { CommandOptions, WaitOptions } from './commands.js';
import type { MachineInternals } from './internals.js';

/** A monitor event: QEMU's QMP events (RESET, STOP, ...). */
export type QmpEvent = VmmEvent;

/** Which QMP events a wait accepts: an event name, a predicate, or a name with data to match. */
export type QmpEventFilter =
  | string
  | ((event: QmpEvent) => boolean)
  | { event: string; data?: Record<string, unknown> };

/** The VMM's own monitor (QEMU's QMP); a CapabilityError for a backend without one. */
export function monitorOf({ vmm, backend }: Pick<MachineInternals, 'vmm' | 'backend'>): VmmMonitor {
  if (!vmm.monitor) throw new CapabilityError(backend.title, 'a QMP monitor');
  return vmm.monitor;
}

/** Runs a human monitor (HMP) command, like `info status`; resolves with what the monitor printed. */
export async function sendMonitorCommand(
  { vmm, backend, commandTimeoutMs }: Pick<MachineInternals, 'vmm' | 'backend' | 'commandTimeoutMs'>,
  command: string,
  options: CommandOptions,
): Promise<string> {
  const call = checkCall('sendMonitorCommand', { command, options });
  if (!vmm.humanCommand) throw new CapabilityError(backend.title, 'a QMP monitor');
  return vmm.humanCommand(command, call.timeoutMs ?? commandTimeoutMs);
}

/** Waits for the next QMP event that `filter` accepts. */
export async function waitForQmpEvent(
  internals: Pick<MachineInternals, 'vmm' | 'backend' | 'name' | 'commandTimeoutMs'>,
  filter: QmpEventFilter,
  options: WaitOptions,
): Promise<QmpEvent> {
  const timeoutMs =
    checkCall('waitForQmpEvent', { waitOptions: options }).timeoutMs ?? internals.commandTimeoutMs;
  const qmp = monitorOf(internals);
  const machine = internals.name;
  const accepts = acceptor(filter);
  const seen: string[] = [];
  return waitWithin<QmpEvent>(
    timeoutMs,
    `a QMP event ${describeFilter(filter)} from ${machine}`,
    (resolve) => {
      const onEvent = (event: QmpEvent) => {
        if (accepts(event)) resolve(event);
        else seen.push(event.event);
      };
      qmp.on('event', onEvent);
      return () => qmp.off('event', onEvent);
    },
    {
      lastState: () =>
        seen.length ? `other events seen: ${seen.slice(-10).join(', ')}` : 'no QMP event seen',
    },
  );
}

function acceptor(filter: QmpEventFilter): (event: QmpEvent) => boolean {
  if (typeof filter === 'function') return filter;
  if (typeof filter === 'string') return (event) => event.event === filter;
  return (event) =>
    event.event === filter.event &&
    Object.entries(filter.data ?? {}).every(
      ([key, value]) =>
        JSON.stringify((event.data as Record<string, unknown> | undefined)?.[key]) === JSON.stringify(value),
    );
}

function describeFilter(filter: QmpEventFilter): string {
  if (typeof filter === 'function') return 'matching the filter';
  if (typeof filter === 'string') return filter;
  return `${filter.event}${filter.data ? ` with ${JSON.stringify(filter.data)}` : ''}`;
}

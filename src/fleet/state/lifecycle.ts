import { VmkitError } from '../../errors.js';

/** An instance's lifecycle states, as in mvm. */
export const STATES = ['Created', 'Ready', 'Running', 'Warm', 'Sleeping', 'Stopped', 'Destroyed'] as const;
export type InstanceState = (typeof STATES)[number];

/** Whether an instance in `state` holds its guest's state (a VMM's RAM, or a sleep state). */
export const holdsState = (state: string) => state === 'Running' || state === 'Warm' || state === 'Sleeping';

/**
 * Every allowed transition; any pair not listed is refused. Warm is paused vCPUs (the VMM still
 * holds RAM); Sleeping is a saved state on disk with no VMM; Stopped has only its data disk.
 */
export const TRANSITIONS: Readonly<Record<InstanceState, readonly InstanceState[]>> = {
  Created: ['Ready', 'Destroyed'],
  Ready: ['Running', 'Sleeping', 'Destroyed'],
  Running: ['Warm', 'Sleeping', 'Stopped', 'Destroyed'],
  Warm: ['Running', 'Sleeping', 'Stopped', 'Destroyed'],
  Sleeping: ['Running', 'Stopped', 'Destroyed'],
  Stopped: ['Running', 'Destroyed'],
  Destroyed: [],
};

/** A lifecycle operation and the state it leads to. */
export const OPERATIONS = {
  prepare: 'Ready',
  start: 'Running',
  stop: 'Stopped',
  warm: 'Warm',
  resume: 'Running',
  sleep: 'Sleeping',
  wake: 'Running',
  /** A cluster move's arrival: another node's sleep state adopted by a new instance. */
  arrive: 'Sleeping',
  destroy: 'Destroyed',
} as const satisfies Record<string, InstanceState>;
export type Operation = keyof typeof OPERATIONS;

/** Which states each operation starts from: start needs Ready/Stopped, resume needs Warm, wake Sleeping. */
const SOURCES: Record<Operation, readonly InstanceState[]> = {
  prepare: ['Created'],
  start: ['Ready', 'Stopped'],
  stop: ['Running', 'Warm', 'Sleeping'],
  warm: ['Running'],
  resume: ['Warm'],
  sleep: ['Running', 'Warm'],
  wake: ['Sleeping'],
  arrive: ['Ready'],
  destroy: ['Created', 'Ready', 'Running', 'Warm', 'Sleeping', 'Stopped'],
};

/** A request the fleet understood and refused (a quota, a transition): the CLI exits 1. */
export class RefusedError extends VmkitError {}

export function canTransition(from: InstanceState, to: InstanceState): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Throws RefusedError unless `from` -> `to` is in the table. */
export function checkTransition(from: InstanceState, to: InstanceState, what: string): void {
  if (!canTransition(from, to)) {
    const allowed = TRANSITIONS[from].join(', ') || 'nothing';
    throw new RefusedError(`${what}: cannot go from ${from} to ${to} (from ${from}: ${allowed})`);
  }
}

/** Throws RefusedError unless `operation` may run on an instance in state `from`. */
export function checkOperation(operation: Operation, from: InstanceState, what: string): InstanceState {
  const to = OPERATIONS[operation];
  if (!SOURCES[operation].includes(from)) {
    throw new RefusedError(
      `${what}: cannot ${operation} an instance that is ${from} (${operation} needs ${SOURCES[operation].join(' or ')})`,
    );
  }
  checkTransition(from, to, what);
  return to;
}

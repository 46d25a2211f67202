import { OwnedElsewhereError } from '../errors.js';
import type { MachineInternals } from './internals.js';

/** Throws for a call that would change the life of a VMM that belongs to something else (attached.ts). */
export function refuseAttached(
  { owner, name }: Pick<MachineInternals, 'owner' | 'name'>,
  call: string,
): void {
  if (owner) throw new OwnedElsewhereError(name, call, owner.describe);
}

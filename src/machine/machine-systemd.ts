/**
 * The systemd half of the Machine API (NixOS driver names in camelCase), added to Machine's
 * prototype so that machine.ts stays small: each method delegates to systemd.ts or ports.ts.
 * Imported for its effect by launch.ts, which every Machine comes from.
 */

import type { ExecResult } from './machine.js';
import { Machine } from './machine.js';
import { type UnixSocketOptions, waitForOpenUnixSocket } from './ports.js';
import type { JournalOptions, UserOption, WaitForUnitOptions } from './systemd.js';
import * as systemd from './systemd.js';

declare module './machine.js' {
  interface Machine {
    /** Waits for the unit's ActiveState (default "active"); fails early when it fails or goes inactive with no job queued. */
    waitForUnit(unit: string, options?: WaitForUnitOptions): Promise<void>;
    /** `systemctl show <unit>` as an object. */
    getUnitInfo(unit: string, options?: UserOption): Promise<Record<string, string>>;
    /** One property of `systemctl show <unit>`. */
    getUnitProperty(unit: string, property: string, options?: UserOption): Promise<string>;
    /** Throws a UnitStateError unless the unit's ActiveState is `state`. */
    requireUnitState(unit: string, state?: string, options?: UserOption): Promise<void>;
    /** Runs systemctl (as root, or against `user`'s manager); the result is execute()'s. */
    systemctl(args: string | string[], options?: UserOption): Promise<ExecResult>;
    startJob(unit: string, options?: UserOption): Promise<ExecResult>;
    stopJob(unit: string, options?: UserOption): Promise<ExecResult>;
    /** The journal as text. */
    journal(options?: JournalOptions): Promise<string>;
    /** Waits until a unix socket is listening (stream) or bound (datagram), without connecting. */
    waitForOpenUnixSocket(path: string, options?: UnixSocketOptions): Promise<void>;
  }
}

const methods: ThisType<Machine> & Partial<Machine> = {
  waitForUnit(unit, options = {}) {
    return systemd.waitForUnit(this, unit, options, this.commandTimeoutMs);
  },
  getUnitInfo(unit, options) {
    return systemd.getUnitInfo(this, unit, options);
  },
  getUnitProperty(unit, property, options) {
    return systemd.getUnitProperty(this, unit, property, options);
  },
  requireUnitState(unit, state, options) {
    return systemd.requireUnitState(this, unit, state, options);
  },
  systemctl(args, options) {
    return systemd.systemctl(this, args, options);
  },
  startJob(unit, options) {
    return systemd.startJob(this, unit, options);
  },
  stopJob(unit, options) {
    return systemd.stopJob(this, unit, options);
  },
  journal(options) {
    return systemd.journal(this, options);
  },
  waitForOpenUnixSocket(path, options = {}) {
    return waitForOpenUnixSocket(this, path, options, this.commandTimeoutMs);
  },
};
Object.assign(Machine.prototype, methods);

export type { JournalOptions, UnixSocketOptions, UserOption, WaitForUnitOptions };

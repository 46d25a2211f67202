/** Errors vmkit throws. Each carries what a person needs to see what went wrong. */

export class VmkitError extends Error {
  override name = 'VmkitError';
}

/** Bad input from the caller: an unknown image, an invalid name, a missing file. */
export class ConfigError extends VmkitError {
  override name = 'ConfigError';
}

/** A wait ran out of time. `awaited` names what was awaited, `lastState` what was seen last. */
export class TimeoutError extends VmkitError {
  override name = 'TimeoutError';
  constructor(
    readonly awaited: string,
    readonly timeoutMs: number,
    readonly lastState?: string,
    readonly consoleTail?: string,
  ) {
    super(formatMessage(`timed out after ${timeoutMs} ms waiting for ${awaited}`, lastState, consoleTail));
  }
}

/** A command in the guest finished with an unexpected exit status. */
export class CommandFailedError extends VmkitError {
  override name = 'CommandFailedError';
  constructor(
    readonly command: string,
    readonly exitCode: number,
    readonly stdout: string,
    readonly stderr: string,
    expectation = 'exit status 0',
  ) {
    super(
      `command ${JSON.stringify(command)} exited with status ${exitCode} (expected ${expectation})` +
        section('stdout', tail(stdout)) +
        section('stderr', tail(stderr)),
    );
  }
}

/** A command in the guest ran longer than its timeout; the guest killed it. */
export class CommandTimeoutError extends TimeoutError {
  override name = 'CommandTimeoutError';
  constructor(
    readonly command: string,
    timeoutMs: number,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(
      `command ${JSON.stringify(command)}`,
      timeoutMs,
      `partial stdout: ${JSON.stringify(tail(stdout, 400))}, partial stderr: ${JSON.stringify(tail(stderr, 400))}`,
    );
  }
}

/** The machine is gone (QEMU exited, the kernel panicked, the guest powered off) or unusable. */
export class MachineCrashedError extends VmkitError {
  override name = 'MachineCrashedError';
  constructor(
    readonly machine: string,
    readonly reason: string,
    readonly consoleTail: string,
  ) {
    super(formatMessage(`machine ${machine}: ${reason}`, undefined, consoleTail));
  }
}

/**
 * A call that would change or end a VM that belongs to something else (a fleet instance, a
 * project VM) was made on a Machine attached to it: its owner does that, with its own command.
 */
export class OwnedElsewhereError extends VmkitError {
  override name = 'OwnedElsewhereError';
  constructor(
    readonly machine: string,
    readonly call: string,
    owner: string,
  ) {
    super(`machine ${machine}: ${call} is not for an attached machine: ${owner}`);
  }
}

/**
 * The guest rebooted (on a machine that allows it) while a call ran: a command or started process
 * that the reboot killed cannot complete. The machine lives on: later calls wait until it is back
 * and set up again, and waits (waitForUnit, waitUntilSucceeds, ...) retry by themselves.
 */
export class GuestRebootedError extends VmkitError {
  override name = 'GuestRebootedError';
  constructor(
    readonly machine: string,
    readonly during: string,
    readonly consoleTail: string,
  ) {
    super(
      formatMessage(
        `machine ${machine}: the guest rebooted during ${during}, which cannot complete`,
        undefined,
        consoleTail,
      ),
    );
  }
}

/** QEMU's monitor answered a command with an error. */
export class QmpError extends VmkitError {
  override name = 'QmpError';
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly description: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${description}`);
  }
}

/** A guest image could not be built or found. */
export class ImageError extends VmkitError {
  override name = 'ImageError';
}

/** The VMM (QEMU) is missing, refused its command line, or died before the machine was up. */
export class VmmStartError extends VmkitError {
  override name = 'VmmStartError';
}

/** A snapshot could not be taken, or cannot be restored (damaged, tampered, taken elsewhere). */
export class SnapshotError extends VmkitError {
  override name = 'SnapshotError';
}

/** A file copy between host and guest failed. Only that copy: the machine stays usable. */
export class TransferError extends VmkitError {
  override name = 'TransferError';
}

/** A program vmkit runs on the host (qemu-img, apt-get, dpkg-deb) failed or did not finish. */
export class HostToolError extends VmkitError {
  override name = 'HostToolError';
}

/** QEMU's monitor connection failed or closed. */
export class QmpConnectionError extends VmkitError {
  override name = 'QmpConnectionError';
}

/** A virtual switch could not be set up. */
export class NetworkError extends VmkitError {
  override name = 'NetworkError';
}

/** The cluster's etcd did not answer, or refused a request. */
export class ClusterError extends VmkitError {
  override name = 'ClusterError';
}

/** The guest came up but the set-up vmkit runs in it after boot or restore failed. */
export class GuestSetupError extends VmkitError {
  override name = 'GuestSetupError';
}

/** A test run ended early: its global timeout, or work finishing after the run had ended. */
export class TestRunError extends VmkitError {
  override name = 'TestRunError';
}

/**
 * Work given up because the process got SIGINT or SIGTERM, after undoing what it had begun. The
 * CLI exits with `exitCode` (128 + the signal's number, as a shell reports a death by it).
 */
export class InterruptedError extends VmkitError {
  override name = 'InterruptedError';
  readonly exitCode: number;
  constructor(
    readonly signal: 'SIGINT' | 'SIGTERM',
    what: string,
  ) {
    super(`${what}: interrupted by ${signal}`);
    this.exitCode = signal === 'SIGINT' ? 130 : 143;
  }
}

/** A wait was given up because its AbortSignal fired. */
export class AbortedError extends VmkitError {
  override name = 'AbortedError';
}

/** The machine's backend cannot do what was asked. Names the backend and the capability. */
export class CapabilityError extends VmkitError {
  override name = 'CapabilityError';
  constructor(
    readonly backend: string,
    readonly capability: string,
    detail?: string,
  ) {
    super(`the ${backend} backend does not support ${capability}${detail ? ` (${detail})` : ''}`);
  }
}

/**
 * The mock backend's script and the commands a test ran disagree: a command the script does not
 * answer (the mock guest stops there, so later calls on that machine fail too), or steps the test
 * never used. `expected` lists what the script still expected.
 */
export class MockScriptError extends VmkitError {
  override name = 'MockScriptError';
  constructor(
    message: string,
    readonly expected: string[],
    readonly machine?: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

/**
 * A systemd unit is in a state it was not meant to be in (it failed, or went inactive with no job
 * left that could start it). Carries `systemctl status` and the unit's journal tail.
 */
export class UnitStateError extends VmkitError {
  override name = 'UnitStateError';
  constructor(
    readonly machine: string,
    readonly unit: string,
    readonly state: string,
    problem: string,
    readonly status: string,
    readonly journal: string,
  ) {
    super(
      `machine ${machine}: unit ${unit} ${problem}` +
        section('systemctl status', tail(status, 1500)) +
        section('journal', tail(journal, 2500)),
    );
  }
}

/** A value as a person would write it in an error message: strings quoted, the rest by type. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value);
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : typeof value;
}

/** The last `maxChars` characters of text, marked when cut. */
export function tail(text: string, maxChars = 2000): string {
  return text.length <= maxChars ? text : `…${text.slice(-maxChars)}`;
}

function section(title: string, body: string | undefined): string {
  if (!body || body.trim() === '') return '';
  const indented = body
    .trimEnd()
    .split('\n')
    .map((line) => `  | ${line}`)
    .join('\n');
  return `\n${title}:\n${indented}`;
}

function formatMessage(head: string, lastState?: string, consoleTail?: string): string {
  return head + (lastState ? `\nlast state: ${lastState}` : '') + section('console tail', consoleTail);
}

/** A call that needs vmkit's backdoor, on a machine started with `backdoor: false`. */
export class NoBackdoorError extends VmkitError {
  override name = 'NoBackdoorError';
  constructor(readonly machine: string) {
    super(
      `machine ${machine} was started with backdoor: false, so commands cannot run through vmkit's agent: use machine.consoleShell() (or SSH)`,
    );
  }
}

import { MockScriptError } from '../../errors.js';
import { mockProfile } from '../../guest/profiles/mock.js';

/** How the mock guest answers one command. */
export interface MockReply {
  stdout?: string;
  stderr?: string;
  /** Exit status (default 0). */
  status?: number;
  /**
   * The command outlives its timeout: the guest answers "timed out" once the caller's own timeout
   * (whole seconds, as the real guest's watchdog counts) has passed.
   */
  timedOut?: boolean;
  /** Answers after this many milliseconds. */
  delayMs?: number;
}

/**
 * One step of a mock script: what it answers (exactly one of `command`, `unit`, `port`) and how.
 * A string `command` matches the command exactly as vmkit sends it; a RegExp matches any command
 * it finds.
 */
export interface MockStep extends MockReply {
  command?: string | RegExp;
  /**
   * Answers `waitForUnit(unit)` (and `getUnitInfo`, `requireUnitState`) as a guest whose unit is
   * in ActiveState `state` (default "active"): a wait for another state gets what the guest's wait
   * loop would end with (failed, inactive), or never ends (the call's timeout runs out).
   */
  unit?: string;
  state?: string;
  /** Answers `waitForOpenPort(port)`/`waitForClosedPort(port)`: TCP `port` listens (default) or not. */
  port?: number;
  open?: boolean;
  /** How many commands it answers (default 1). */
  times?: number;
  /** Answers any number of commands, out of order too, and is never missed at the end. */
  always?: boolean;
  /** Only commands of the machine of this name. */
  machine?: string;
  /** The guest powers off instead of answering (the machine's VMM ends with status 0). */
  powerOff?: boolean;
}

export interface MockScriptOptions {
  script?: MockStep[];
  /**
   * Steps answer in the order listed (each machine its own; `always` steps at any time). Default
   * false: a command takes the first step that matches it and has uses left.
   */
  ordered?: boolean;
  /** The answer to commands that no step matches; without it they fail with MockScriptError. */
  otherwise?: MockReply;
  /** What each mock guest prints on its serial console once it runs. */
  console?: string;
}

/** A command the mock guest got, and the step (its index in the script) that answered it. */
export interface MockCommand {
  machine: string;
  command: string;
  /** The index of the step in the script; `builtin` for vmkit's own commands; `otherwise`. */
  answeredBy: number | 'builtin' | 'otherwise';
}

export type MockAnswer = Required<Omit<MockReply, 'delayMs'>> & { delayMs: number; powerOff: boolean };

const WAIT_FOR_UNIT = /^set -- '([^']*)' '([^']*)' '[^']*'\n# vmkit waitForUnit/;
const SHOW_UNIT = /systemctl (?:--user )?--no-pager show -- '([^']*)'$/;
/** What waitForUnit runs after a unit failed, for its error: status and journal tail. */
const UNIT_DIAGNOSTICS = [
  /systemctl (?:--user )?--no-pager status -l -- '[^']*' 2>&1$/,
  /^journalctl --no-pager -n 40 (?:-u|--user-unit) '[^']*' 2>&1$/,
];

/** What the driver's diagnostics bundle runs in a failed machine (driver/diagnostics.ts). */
const RUN_DIAGNOSTICS = [/^dmesg$/, /^ps -ef /, /^command -v (?:systemctl|journalctl) >\/dev\/null && /];

/**
 * The TCP port a port wait probes with `command` (the profile's probe script `probeBody`, its
 * arguments set first: the port in hex, then the addresses accepted), or undefined for any other.
 */
function probedPort(command: string, probeBody: string): number | undefined {
  const newline = command.indexOf('\n');
  const hex = /^set -- '([0-9A-F]{4})'/.exec(command)?.[1];
  if (!hex || newline < 0) return undefined;
  return command.slice(newline) === probeBody ? Number.parseInt(hex, 16) : undefined;
}

/** A command as an error shows it: vmkit's own port probe by what it asks (a step `port:` answers it). */
function describeCommand(command: string, port: number | undefined): string {
  return port === undefined
    ? JSON.stringify(command)
    : `(vmkit's probe: is TCP port ${port} listening? a step { port: ${port} } answers it)`;
}

const answer = (reply: MockReply, powerOff = false): MockAnswer => ({
  stdout: reply.stdout ?? '',
  stderr: reply.stderr ?? '',
  status: reply.status ?? 0,
  timedOut: reply.timedOut ?? false,
  delayMs: reply.delayMs ?? 0,
  powerOff,
});

/** The reply of `step` to `command`, or undefined when the step does not answer it. */
function stepAnswer(step: MockStep, command: string, port: number | undefined): MockAnswer | undefined {
  if (step.command !== undefined) {
    const matches =
      typeof step.command === 'string' ? step.command === command : new RegExp(step.command).test(command);
    return matches ? answer(step, step.powerOff) : undefined;
  }
  if (step.unit !== undefined) return unitAnswer(step, step.unit, step.state ?? 'active', command);
  if (step.port !== undefined) {
    return port === step.port ? answer({ ...step, status: (step.open ?? true) ? 0 : 1 }) : undefined;
  }
  return undefined;
}

/** What the guest's waitForUnit loop, or `systemctl show`, says of a unit in `state`. */
function unitAnswer(step: MockStep, unit: string, state: string, command: string): MockAnswer | undefined {
  const wait = WAIT_FOR_UNIT.exec(command);
  if (wait && wait[1] === unit) {
    const want = wait[2];
    const reply = { ...step, stdout: `${state}\n` };
    if (state === want) return answer({ ...reply, status: 0 });
    if (state === 'failed') return answer({ ...reply, status: 3 });
    if (state === 'inactive') return answer({ ...reply, status: 4 });
    return answer({ ...reply, timedOut: true }); // the loop waits on for a state that never comes
  }
  const show = SHOW_UNIT.exec(command);
  if (show && show[1] === unit) return answer({ ...step, stdout: `Id=${unit}\nActiveState=${state}\n` });
  return undefined;
}

/** How a step shows in error messages. */
export function describeStep(step: MockStep, left?: number): string {
  const what =
    step.command !== undefined
      ? typeof step.command === 'string'
        ? JSON.stringify(step.command)
        : String(step.command)
      : step.unit !== undefined
        ? `waitForUnit(${JSON.stringify(step.unit)}) seeing ${step.state ?? 'active'}`
        : `a check of TCP port ${step.port} (${(step.open ?? true) ? 'open' : 'closed'})`;
  const count = step.always ? 'any number of times' : left !== undefined && left !== 1 ? `${left} times` : '';
  const details = [count, step.machine ? `machine ${step.machine}` : ''].filter(Boolean).join(', ');
  return details ? `${what} (${details})` : what;
}

/**
 * The script of expected commands and their answers, shared by every machine of one mock
 * backend: it counts what each step has answered and records every command it was asked.
 */
export class MockScript {
  private readonly steps: MockStep[];
  private readonly left: number[];
  /** Every command asked so far, in order, and what answered it. */
  readonly commands: MockCommand[] = [];

  /** vmkit's own commands as the mock guest's profile writes them, read once. */
  private readonly powerOff = mockProfile.commands.powerOff();
  private readonly probeBody: string;

  constructor(private readonly options: MockScriptOptions) {
    const probe = mockProfile.commands.tcpListening(0);
    this.probeBody = probe.slice(probe.indexOf('\n'));
    this.steps = options.script ?? [];
    this.left = this.steps.map((step) => (step.always ? Number.POSITIVE_INFINITY : (step.times ?? 1)));
  }

  get console(): string | undefined {
    return this.options.console;
  }

  /** The answer to `command` on `machine`, or the MockScriptError that says why there is none. */
  answer(machine: string, command: string): MockAnswer | MockScriptError {
    const record = (answeredBy: MockCommand['answeredBy']) => {
      this.commands.push({ machine, command, answeredBy });
    };
    const port = probedPort(command, this.probeBody);
    for (const index of this.candidates(machine)) {
      const reply = stepAnswer(this.steps[index] as MockStep, command, port);
      if (!reply) continue;
      this.left[index] = (this.left[index] as number) - 1;
      record(index);
      return reply;
    }
    if (command === this.powerOff) {
      record('builtin'); // Machine.shutdown()
      return answer({}, true);
    }
    if (UNIT_DIAGNOSTICS.some((pattern) => pattern.test(command))) {
      record('builtin');
      return answer({});
    }
    if (RUN_DIAGNOSTICS.some((pattern) => pattern.test(command))) {
      record('builtin');
      return answer({ status: 127, stderr: 'not on the mock guest\n' });
    }
    if (this.options.otherwise) {
      record('otherwise');
      return answer(this.options.otherwise);
    }
    const expected = this.expected(machine);
    const list = expected.length > 0 ? expected.map((line) => `\n  ${line}`).join('') : ' nothing more';
    return new MockScriptError(
      `machine ${machine} (mock backend): unexpected command ${describeCommand(command, port)}; the script expected${this.options.ordered ? ', in this order' : ''}:${list}`,
      expected,
      machine,
      command,
    );
  }

  /** Steps with uses left, as described in errors (all machines, or only those `machine` may use). */
  expected(machine?: string): string[] {
    const indexes = this.steps.keys();
    return [...indexes]
      .filter((index) => (this.left[index] as number) > 0)
      .filter((index) => machine === undefined || this.applies(index, machine))
      .map((index) => describeStep(this.steps[index] as MockStep, this.left[index]));
  }

  /** The steps (not `always` ones) that still have uses left. */
  unused(): MockStep[] {
    return this.steps.filter((step, index) => !step.always && (this.left[index] as number) > 0);
  }

  /** Throws a MockScriptError listing every step (not `always` ones) that was not used up. */
  verify(): void {
    const missing = [...this.steps.keys()]
      .filter((index) => !this.steps[index]?.always && (this.left[index] as number) > 0)
      .map((index) => describeStep(this.steps[index] as MockStep, this.left[index]));
    if (missing.length === 0) return;
    throw new MockScriptError(
      `the mock script expected commands that never came:${missing.map((line) => `\n  ${line}`).join('')}`,
      missing,
    );
  }

  private applies(index: number, machine: string): boolean {
    const owner = this.steps[index]?.machine;
    return owner === undefined || owner === machine;
  }

  /** The steps that may answer the next command of `machine`, in the order they are tried. */
  private candidates(machine: string): number[] {
    const usable = [...this.steps.keys()].filter(
      (index) => (this.left[index] as number) > 0 && this.applies(index, machine),
    );
    if (!this.options.ordered) return usable;
    const next = usable.find((index) => !this.steps[index]?.always);
    return [...(next === undefined ? [] : [next]), ...usable.filter((index) => this.steps[index]?.always)];
  }
}

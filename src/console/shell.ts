import { z } from 'zod';
import {
  CommandFailedError,
  CommandTimeoutError,
  ConfigError,
  describeValue,
  TimeoutError,
  VmkitError,
} from '../errors.js';
import { parseInput, timeoutMs as timeoutSchema } from '../util/validate.js';
import type { ExpectMatch, SerialConsole } from './serial.js';

const commandOptions = z
  .object({ timeoutMs: timeoutSchema.optional() }, { error: 'must be an options object like { timeoutMs }' })
  .strict();

/** A console shell could not log in, escalate, or set itself up. Carries the transcript. */
export class ConsoleShellError extends VmkitError {
  override name = 'ConsoleShellError';
  constructor(
    message: string,
    readonly transcript: string,
  ) {
    super(`${message}\ntranscript (newest last):\n${transcript}`);
  }
}

export interface ConsoleShellOptions {
  /** Log in as this user at a getty prompt; without one the console must already show a shell. */
  user?: string;
  password?: string;
  /** How to become root after logging in (default 'none': stay as the user, or as root already). */
  escalate?: 'sudo' | 'su' | 'doas' | 'none';
  /** su's root password; sudo and doas are given the user's password. */
  rootPassword?: string;
  /** For each step of logging in and escalating (default 60000). */
  timeoutMs?: number;
}

export interface ConsoleResult {
  exitCode: number;
  /** stdout and stderr together: a terminal cannot tell them apart. */
  stdout: string;
  stderr: '';
}

const LOGIN_PROMPT = /login: *$/;
const PASSWORD_PROMPT = /(?:[Pp]assword|[Pp]assword for [^:\n]*|passphrase)[^\n]*: *$/;
/** A shell prompt: ends in $, #, % or > and a space, with nothing after it yet. */
const SHELL_PROMPT = /[$#%>] ?$/;
const LOGIN_FAILED =
  /Login incorrect|Authentication failure|Permission denied|incorrect password|Sorry, try again/i;
const NOT_FOUND = /(?:^|\s)(?:sudo|su|doas)(?:: command not found|: not found|: No such file)/m;
const NOT_ALLOWED = /is not in the sudoers file|not allowed to|Operation not permitted/;
// Written so that the typed text never contains the marker it makes the shell print.
const SENTINEL = '<<VMKIT-PS1>>';
const TYPED_SENTINEL = `'<''<VMKIT-PS1>''>'`;

/**
 * A shell on a machine's serial console, for guests without vmkit's backdoor: logs in, becomes
 * root, sets a sentinel prompt, and runs commands with their exit status. Echo, colour prompts,
 * bracketed paste and history expansion are turned off; kernel messages in the output are dropped.
 */
export class ConsoleShell {
  private nextId = 1;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly console: SerialConsole,
    private readonly machine: string,
    private readonly stepMs: number,
  ) {}

  static async open(
    console: SerialConsole,
    machine: string,
    options: ConsoleShellOptions = {},
  ): Promise<ConsoleShell> {
    parseInput(timeoutSchema.optional(), options.timeoutMs, 'consoleShell: options: timeoutMs');
    const escalate = options.escalate ?? 'none';
    if (!['sudo', 'su', 'doas', 'none'].includes(escalate)) {
      throw new ConfigError(
        `consoleShell: escalate must be sudo, su, doas or none (got ${describeValue(escalate)})`,
      );
    }
    if (escalate === 'su' && options.rootPassword === undefined) {
      throw new ConfigError('consoleShell: escalate: su needs rootPassword');
    }
    const shell = new ConsoleShell(console, machine, options.timeoutMs ?? 60_000);
    await console.recordStep('login', options.user ?? '(a shell already)', async () => {
      await shell.login(options);
      await shell.prepare('logged in');
    });
    if (escalate !== 'none')
      await console.recordStep('escalate', escalate, () => shell.escalate(escalate, options));
    console.shell = shell;
    return shell;
  }

  private refuse(message: string): never {
    throw new ConsoleShellError(`machine ${this.machine}: ${message}`, this.console.transcript.format(3000));
  }

  private async expectAny(patterns: RegExp[], what: string) {
    try {
      return await this.console.expectAny(patterns, { timeoutMs: this.stepMs, on: 'stream' });
    } catch (error) {
      this.refuse(`${what}: ${(error as Error).message.split('\n')[0]}`);
    }
  }

  private async login(options: ConsoleShellOptions): Promise<void> {
    const first = await this.console.recordStep(
      'prompt',
      'a login or shell prompt',
      () => this.firstPrompt(),
      (index) => ({ output: index === 0 ? 'login prompt' : 'shell prompt' }),
    );
    if (first === 1) return; // a shell already
    if (options.user === undefined) this.refuse('the console asks for a login, and no user was given');
    let asked: ExpectMatch;
    // A getty that restarts (after a failed login, say) prints its prompt again: answer it anew.
    for (let attempt = 1; ; attempt++) {
      this.console.sendLine(options.user);
      asked = await this.expectAny(
        [PASSWORD_PROMPT, SHELL_PROMPT, LOGIN_FAILED, LOGIN_PROMPT],
        `logging in as ${options.user}`,
      );
      if (asked.index !== 3) break;
      if (attempt === 3) this.refuse(`the login prompt came back ${attempt} times after the user name`);
    }
    if (asked.index === 2) this.refuse(`login as ${options.user} was refused`);
    if (asked.index === 0) {
      this.console.sendLine(options.password ?? '');
      const after = await this.expectAny(
        [LOGIN_FAILED, LOGIN_PROMPT, SHELL_PROMPT],
        `logging in as ${options.user}`,
      );
      if (after.index !== 2) this.refuse(`login as ${options.user} failed: wrong user or password`);
    }
  }

  /**
   * Which prompt the console shows: 0 a login prompt, 1 a shell prompt. A prompt already waiting
   * (printed before, or again after a failed login) is answered as it is: an Enter typed to it
   * would be read as an empty user name. Otherwise Enter makes the getty or shell prompt anew.
   */
  private async firstPrompt(): Promise<number> {
    await this.console.settle(300, 3_000);
    const shown = this.console.tail(400).split('\n').at(-1) ?? '';
    this.console.consume();
    if (LOGIN_PROMPT.test(shown)) return 0;
    if (SHELL_PROMPT.test(shown)) return 1;
    this.console.send('\r');
    const seen = await this.expectAny([LOGIN_PROMPT, SHELL_PROMPT], 'waiting for a login or shell prompt');
    return seen.index;
  }

  /** Quiets the shell and sets the sentinel prompt. */
  private async prepare(stage: string): Promise<void> {
    this.console.sendLine(
      `stty -echo 2>/dev/null; unset PROMPT_COMMAND; case $- in *H*) set +H;; esac; bind 'set enable-bracketed-paste off' 2>/dev/null; export TERM=dumb; PS2=''; PS1=${TYPED_SENTINEL}`,
    );
    await this.expectAny([new RegExp(`${SENTINEL}$`)], `setting up the shell (${stage})`);
  }

  private async escalate(how: 'sudo' | 'su' | 'doas', options: ConsoleShellOptions): Promise<void> {
    this.console.sendLine({ sudo: 'sudo -i', su: 'su -', doas: 'doas -s' }[how]);
    const patterns = [
      NOT_FOUND,
      NOT_ALLOWED,
      LOGIN_FAILED,
      new RegExp(`${SENTINEL}$`),
      PASSWORD_PROMPT,
      SHELL_PROMPT,
    ];
    let answered = false;
    for (;;) {
      const seen = await this.expectAny(patterns, `becoming root with ${how}`);
      if (seen.index === 0) this.refuse(`${how} is not installed in the guest`);
      if (seen.index === 1) this.refuse(`${how} refused: ${seen.match[0]}`);
      if (seen.index === 2 || seen.index === 3)
        this.refuse(`${how} failed: ${answered ? 'wrong password' : 'refused'}`);
      if (seen.index === 5) break;
      if (answered) this.refuse(`${how} asked for the password again: wrong password`);
      this.console.sendLine((how === 'su' ? options.rootPassword : options.password) ?? '');
      answered = true;
    }
    await this.prepare(`after ${how}`);
    const id = await this.execute('id -u');
    if (id.stdout.trim() !== '0')
      this.refuse(`after ${how} the shell runs as uid ${id.stdout.trim()}, not root`);
  }

  /** Runs a command; resolves with its exit status and its output (stdout and stderr merged). */
  async execute(command: string, options: { timeoutMs?: number } = {}): Promise<ConsoleResult> {
    if (typeof command !== 'string')
      throw new ConfigError(`execute takes a command string, not ${describeValue(command)}`);
    parseInput(commandOptions, options, 'consoleShell execute: options');
    const run = this.queue.then(() =>
      this.console.recordStep(
        'command',
        command,
        () => this.run(command, options.timeoutMs ?? 120_000),
        (result) => ({ exitCode: result.exitCode, output: result.stdout }),
      ),
    );
    this.queue = run.catch(() => {});
    return run;
  }

  async succeed(command: string, options: { timeoutMs?: number } = {}): Promise<string> {
    const result = await this.execute(command, options);
    if (result.exitCode !== 0) throw new CommandFailedError(command, result.exitCode, result.stdout, '');
    return result.stdout;
  }

  async fail(command: string, options: { timeoutMs?: number } = {}): Promise<string> {
    const result = await this.execute(command, options);
    if (result.exitCode === 0)
      throw new CommandFailedError(command, 0, result.stdout, '', 'a non-zero exit status');
    return result.stdout;
  }

  private async run(command: string, timeoutMs: number): Promise<ConsoleResult> {
    const id = this.nextId++;
    const begin = `<<VMKIT-BEGIN:${id}>>`;
    this.console.sendLine(
      `printf '<<%s:%s>>\\n' VMKIT-BEGIN ${id}; ( ${command}\n) </dev/null; printf '\\n<<%s:%s:%s>>\\n' VMKIT-END ${id} "$?"`,
    );
    const end = new RegExp(`${escapeRegExp(begin)}\\n([\\s\\S]*?)\\n<<VMKIT-END:${id}:(\\d+)>>\\n`);
    try {
      const { match } = await this.console.expect(end, { timeoutMs, on: 'stream' });
      return { exitCode: Number(match[2]), stdout: match[1] ?? '', stderr: '' };
    } catch (error) {
      if (!(error instanceof TimeoutError)) throw error;
      this.console.sendKey('ctrl-c'); // the shell gets its prompt back for the next command
      throw new CommandTimeoutError(command, timeoutMs, this.console.tail(1000), '');
    }
  }
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

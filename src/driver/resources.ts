import { join } from 'node:path';
import { TestRunError } from '../errors.js';
import type { Machine } from '../machine/machine.js';
import { VirtualSwitch } from '../network/switch.js';
import type { Runtime } from '../runtime/runtime.js';
import { ensureDir } from '../util/files.js';
import type { RunLog } from '../util/log.js';
import { bounded, LEDGER_LIMITS, type Ledger } from './ledger.js';
import { showCommandOutput } from './live-output.js';

/**
 * Everything a run started, so that it can all be stopped whatever happens. Once closed, anything
 * still arriving (a machine that finishes booting after a timeout, a switch created late) is
 * closed at once instead of being handed out.
 */
export class Resources {
  readonly machines = new Set<Machine>();
  readonly switches = new Set<VirtualSwitch>();
  readonly pending = new Set<Promise<unknown>>();
  readonly aborter = new AbortController();
  private closed = false;
  /** The run's ledger: machines adopted record their boot, commands and console into it. */
  ledger?: Ledger;

  constructor(
    readonly runtime: Runtime,
    private readonly capture: { captureDir?: string; log?: RunLog } = {},
  ) {}

  track<T>(work: Promise<T>): Promise<T> {
    this.pending.add(work);
    work.then(
      () => this.pending.delete(work),
      () => this.pending.delete(work),
    );
    return work;
  }

  /** Takes a machine into the run; closes it and throws when the run already ended. */
  async adopt(
    machine: Machine,
    log: RunLog,
    options: { console?: boolean; verbose?: boolean },
    how: 'boot' | 'restore' = 'boot',
  ): Promise<Machine> {
    if (this.closed) {
      await machine.close();
      throw new TestRunError(`machine ${machine.name} came up after the run had ended; it was stopped`);
    }
    this.machines.add(machine);
    const ledger = this.ledger;
    if (ledger) {
      const test = ledger.currentTest;
      ledger.record({
        kind: how,
        machine: machine.name,
        name: `${how} ${machine.name}`,
        durationMs: machine.readyMs,
        outcome: 'ok',
        ...(test ? { test } : {}),
      });
      machine.observeCommands((command) => ({
        ended: (outcome) =>
          ledger.record({
            kind: 'command',
            machine: machine.name,
            name: command,
            durationMs: outcome.durationMs,
            outcome: outcome.error ? 'failed' : outcome.timedOut ? 'timeout' : 'ok',
            ...(outcome.exitCode !== undefined ? { exitCode: outcome.exitCode } : {}),
            ...(outcome.stdout?.length
              ? { stdout: bounded(outcome.stdout.toString('utf8'), LEDGER_LIMITS.output) }
              : {}),
            ...(outcome.stderr?.length
              ? { stderr: bounded(outcome.stderr.toString('utf8'), LEDGER_LIMITS.output) }
              : {}),
            ...(outcome.error ? { error: bounded(outcome.error.message, LEDGER_LIMITS.error) } : {}),
            ...(test ? { test } : {}),
          }),
      }));
    }
    if (ledger) {
      const test = ledger.currentTest;
      machine.console.on('step', (step) =>
        ledger.record({
          kind: 'console-step',
          machine: machine.name,
          name: `${step.step}: ${step.name}`,
          durationMs: step.durationMs,
          outcome: step.outcome,
          ...(step.exitCode !== undefined ? { exitCode: step.exitCode } : {}),
          ...(step.output ? { stdout: bounded(step.output, LEDGER_LIMITS.output) } : {}),
          ...(step.error ? { error: bounded(step.error, LEDGER_LIMITS.error) } : {}),
          ...(test ? { test } : {}),
        }),
      );
    }
    if (options.console) machine.console.on('line', (line) => log.line(`${machine.name}:con`, line));
    if (options.console || options.verbose) showCommandOutput(machine, log, options.verbose ?? false);
    return machine;
  }

  /**
   * One switch per VLAN, with sockets in the run folder named after `tag`. With a capture folder,
   * each switch's traffic goes to `<captureLabel>vlan<n>.pcap` there until the switch closes.
   */
  async createSwitches(vlans: number[], tag: string, captureLabel = ''): Promise<Map<number, VirtualSwitch>> {
    const switches = new Map<number, VirtualSwitch>();
    try {
      for (const vlan of vlans) {
        if (this.closed) throw new TestRunError('the run ended while its switches were being created');
        const name = `${tag}vlan${vlan}`;
        const sw = await VirtualSwitch.create(name, join(this.runtime.runDir, `${name}.sock`));
        switches.set(vlan, sw);
        this.switches.add(sw);
        this.runtime.own(sw); // closed with the runtime too, whatever path the run takes
        if (this.capture.captureDir) await this.startCapture(sw, `${captureLabel}vlan${vlan}`);
        if (this.closed) throw new TestRunError('the run ended while its switches were being created');
      }
      return switches;
    } catch (error) {
      await this.release([], switches.values());
      throw error;
    }
  }

  private async startCapture(sw: VirtualSwitch, label: string): Promise<void> {
    const { captureDir, log } = this.capture;
    const path = join(captureDir as string, `${label.replace(/[^\w.-]+/g, '_')}.pcap`);
    await ensureDir(captureDir as string); // runTest's captureDir need not exist, as --capture's need not
    await sw.capture(path);
    log?.line('vmkit', `capturing ${sw.name} to ${path}`);
  }

  async release(machines: Iterable<Machine>, switches: Iterable<VirtualSwitch>): Promise<void> {
    const ms = [...machines];
    const ss = [...switches];
    for (const machine of ms) {
      this.machines.delete(machine);
      this.ledger?.record({
        kind: 'console',
        machine: machine.name,
        name: `console of ${machine.name}`,
        detail: { log: bounded(machine.getConsoleLog(), LEDGER_LIMITS.console) },
      });
    }
    for (const sw of ss) {
      this.switches.delete(sw);
      this.runtime.disown(sw);
    }
    await Promise.allSettled(ms.map((machine) => machine.close()));
    await Promise.allSettled(ss.map((sw) => sw.close()));
  }

  async closeAll(): Promise<void> {
    this.closed = true;
    this.aborter.abort();
    await Promise.allSettled([...this.pending]);
    await this.release([...this.machines], [...this.switches]);
  }
}

/** Starts machines in parallel; if any fails, waits for the others and rethrows the first error. */
export async function startAll(
  names: string[],
  start: (name: string) => Promise<Machine>,
): Promise<Record<string, Machine>> {
  const results = await Promise.allSettled(names.map(start));
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failed) throw failed.reason;
  const machines: Record<string, Machine> = {};
  names.forEach((name, index) => {
    const result = results[index];
    if (result?.status === 'fulfilled') machines[name] = result.value;
  });
  return machines;
}

export function withoutDriverFields<
  T extends { vlans?: unknown; setup?: unknown; setupVersion?: unknown; start?: unknown },
>(declaration: T) {
  const { vlans: _vlans, setup: _setup, setupVersion: _version, start: _start, ...options } = declaration;
  return options;
}

import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { CapabilityError, ConfigError, type MockScriptError } from '../../errors.js';
import type { BootImage } from '../../images/types.js';
import { listenOnce } from '../../util/sockets.js';
import type { Backend, BackendCapabilities, ExitInfo, Vmm, VmmChannels, VmmSpec } from '../backend.js';
import { MockGuest, type MockGuestEnd } from './guest.js';
import { parseMockOptions } from './options.js';
import { type MockCommand, MockScript, type MockScriptOptions, type MockStep } from './script.js';

/**
 * What the mock can honestly do: run the agent's protocol over a stream (its NICs take links up
 * and down but carry no frames) under no accelerator worth the name. It saves no state, has no
 * screen, no console program to type at, and no network to the host.
 */
export const MOCK_CAPABILITIES: BackendCapabilities = {
  agentTransport: 'serial-port',
  network: 'stream',
  snapshot: [],
  cowFork: false,
  accels: ['tcg'],
  display: false,
  consoleInput: false,
  hostNetwork: false,
  detached: false,
  diskHotplug: false,
};

/** The image every mock machine gets: nothing is built or read, its profile sets nothing up. */
export const MOCK_IMAGE: BootImage = {
  name: 'mock',
  key: 'mock',
  dir: '',
  kernel: '',
  initrd: '',
  cmdline: '',
  kernelRelease: 'mock',
  profile: 'mock',
};

/** A mock backend: its script, and what its machines were asked. */
export interface MockBackend extends Backend {
  /** Every command its machines ran, in order, and the step that answered each. */
  readonly commands: readonly MockCommand[];
  /** The steps (not `always` ones) that still have uses left. */
  unused(): MockStep[];
  /** Throws a MockScriptError listing the steps that were not used up. */
  verify(): void;
}

/**
 * A backend that runs no VMM: each machine's guest answers commands from `options.script`
 * (see MockStep), so the logic of a test runs in milliseconds without QEMU. What it lacks
 * (snapshots, screens, console input, host networking) fails with a CapabilityError naming it.
 */
export function mockBackend(options: MockScriptOptions = {}): MockBackend {
  const script = new MockScript(parseMockOptions(options));
  const backend: MockBackend = {
    name: 'mock',
    title: 'mock',
    capabilities: MOCK_CAPABILITIES,
    simulated: { image: MOCK_IMAGE, accel: 'tcg' },
    version: async () => 'vmkit mock backend 1',
    launch: (spec) => MockVmm.launch(backend, script, spec),
    commands: script.commands,
    unused: () => script.unused(),
    verify: () => script.verify(),
  };
  return backend;
}

/** Two connected unix sockets in the machine's folder: the host's end and the guest's. */
async function socketPair(path: string): Promise<[Socket, Socket]> {
  const listener = await listenOnce(path);
  const guest = connect(path);
  guest.on('error', () => {});
  try {
    const host = await listener.accepted;
    return [host, guest];
  } catch (error) {
    guest.destroy();
    listener.close();
    throw error;
  }
}

const snapshotError = (what: string) =>
  new CapabilityError('mock', 'snapshot', `${what}: the mock guest has no state to save or load`);

/** A mock "VMM": no process, a guest made of a script, ended by kill, quit or its own power-off. */
class MockVmm implements Vmm {
  readonly pid = 0;
  hasExited = false;
  endedWith?: Error;
  readonly exited: Promise<ExitInfo>;
  /** Each switch NIC's link: up (true) or down, as block() and unblock() left it. */
  readonly links: boolean[];
  private said = '';
  private finish: (info: ExitInfo) => void = () => {};
  private guest?: MockGuest;

  private constructor(
    readonly backend: Backend,
    readonly channels: VmmChannels,
    private readonly guestEnds: Socket[],
    nics: number,
  ) {
    this.exited = new Promise((resolve) => {
      this.finish = resolve;
    });
    this.links = Array.from({ length: nics }, () => true);
  }

  static async launch(backend: Backend, script: MockScript, spec: VmmSpec): Promise<Vmm> {
    if (spec.incoming) throw snapshotError('a restore');
    const [consoleHost, consoleGuest] = await socketPair(join(spec.stateDir, 'con.sock'));
    const [agentHost, agentGuest] = await socketPair(join(spec.stateDir, 'sh.sock')).catch((error) => {
      consoleHost.destroy();
      consoleGuest.destroy();
      throw error;
    });
    const vmm = new MockVmm(
      backend,
      { console: consoleHost, agent: agentHost },
      [consoleGuest, agentGuest],
      spec.nics.length,
    );
    if (script.console) consoleGuest.write(script.console);
    vmm.guest = new MockGuest(spec.name, script, agentGuest, (how) => vmm.guestEnded(how));
    return vmm;
  }

  private guestEnded(how: MockGuestEnd): void {
    if ('error' in how) this.end({ code: 1, signal: null }, how.error);
    else this.end({ code: 0, signal: null });
  }

  private end(info: ExitInfo, error?: MockScriptError): void {
    if (this.hasExited) return;
    this.hasExited = true;
    this.endedWith = error;
    this.said = error?.message ?? '';
    this.guest?.stop();
    for (const socket of this.guestEnds) socket.destroy();
    this.finish(info);
  }

  stderrTail(): string {
    return this.said;
  }

  async kill(): Promise<ExitInfo> {
    this.end({ code: null, signal: 'SIGKILL' });
    return this.exited;
  }

  async quit(): Promise<void> {
    this.end({ code: 0, signal: null });
  }

  async pause(): Promise<void> {
    throw snapshotError('pause');
  }

  async resume(): Promise<void> {
    throw snapshotError('resume');
  }

  async saveState(): Promise<never> {
    throw snapshotError('saveState');
  }

  async loadState(): Promise<void> {
    throw snapshotError('loadState');
  }

  async status(): Promise<string> {
    return this.hasExited ? 'shutdown' : 'running';
  }

  /** The mock guest has no ACPI: its power button ends it at once, as a guest that obeys. */
  async powerDown(): Promise<void> {
    this.end({ code: 0, signal: null });
  }

  async writeState(): Promise<void> {
    throw snapshotError('writeState');
  }

  async readState(): Promise<void> {
    throw snapshotError('readState');
  }

  async abortWriteState(): Promise<void> {
    throw snapshotError('abortWriteState');
  }

  closeControl(): void {
    this.channels.console.destroy();
    this.channels.agent.destroy();
  }

  async setLinkUp(index: number, up: boolean): Promise<void> {
    if (!Number.isInteger(index) || index < 0 || index >= this.links.length)
      throw new ConfigError(`the machine has no switch NIC ${index}`);
    this.links[index] = up;
  }

  async addPortForward(): Promise<void> {
    throw new CapabilityError('mock', 'hostNetwork', 'port forwards');
  }

  async removePortForward(): Promise<void> {
    throw new CapabilityError('mock', 'hostNetwork', 'port forwards');
  }
}

import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BackdoorChannel } from '../agent/backdoor.js';
import type { AccelDecision } from '../backends/accel.js';
import type { Backend, FirmwareBoot, Vmm } from '../backends/backend.js';
import { SerialConsole } from '../console/serial.js';
import { GuestSetupError, MachineCrashedError, NoBackdoorError } from '../errors.js';
import type { AgentRestore, GuestProfile } from '../guest/profiles/index.js';
import type { BootSetup } from '../guest/profiles/profile.js';
import type { Runtime } from '../runtime/runtime.js';
import { makePrivateDir } from '../util/private.js';
import { elapsedMs, sleep } from '../util/time.js';
import type { MachineConfig } from './config.js';
import { setUpGuest } from './guest-setup.js';
import { ramFilePath } from './identity.js';
import type { MachineInternals, MachineNic, SnapshotTaker } from './internals.js';
import { Machine } from './machine.js';
import { type MediaConfig, prepareMedia } from './media.js';

export interface LaunchPlan {
  name: string;
  config: MachineConfig;
  backend: Backend;
  runtime: Runtime;
  profile: GuestProfile;
  accel: AccelDecision;
  /**
   * Each switch NIC as the guest will have it: the switch it plugs into (none: unconnected), its
   * MAC inside the guest once set up, and its address.
   */
  nics: MachineNic[];
  timeoutMs: number;
  commandTimeoutMs: number;
  log: (line: string) => void;
  signal?: AbortSignal;
  /** Creates what the machine needs in its fresh state folder: the RAM file and disk images. */
  prepare(
    stateDir: string,
  ): Promise<{ memory: MachineInternals['memory']; disks: string[]; boot?: FirmwareBoot }>;
  /** Start paused and take the guest from saved state (a restore). */
  incoming: boolean;
  /** The saved state file a restore loads: named when the VMM dies before the machine is ready. */
  statePath?: string;
  /** Brings the guest to the point where the agent answers. */
  ready(vmm: Vmm, agent: BackdoorChannel, console: SerialConsole): Promise<void>;
  /** The same for a cold boot, when the machine is started again after it stopped. */
  bootReady(vmm: Vmm, agent: BackdoorChannel, console: SerialConsole, timeoutMs: number): Promise<void>;
  /** What the guest is told after a cold boot (start() again, reboot()). */
  bootSetup: BootSetup;
  /** Run over the agent before the machine is handed out: hostname, network, clock. */
  setupScript: string;
  /**
   * The same set-up done mostly by the agent itself (a restore): setupScript is then only for an
   * agent too old to know its identity request.
   */
  agentSetup?: AgentRestore;
  /** How this machine came to be, for its log line: "booted", "restored". */
  verb: string;
  /** What machine.snapshot() calls. */
  takeSnapshot: SnapshotTaker;
  /** The host port forwarded to the guest's SSH port, once ready() has set one up. */
  sshPort?: () => number | undefined;
  /** What the guest printed on its console before the state it starts from was saved. */
  consoleHistory?: Buffer;
}

/** A fresh state folder (0700) for a machine: its name, or name.1, name.2, ... when that is taken. */
export async function newStateDir(runDir: string, name: string): Promise<string> {
  for (let suffix = 0; ; suffix++) {
    const dir = join(runDir, suffix === 0 ? name : `${name}.${suffix}`);
    try {
      makePrivateDir(dir);
      return dir;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}

/** Starts a VMM for a plan and turns it into a Machine, or cleans up everything it made. */
export async function launchMachine(plan: LaunchPlan): Promise<Machine> {
  const { name, config, runtime } = plan;
  // Claimed before the first await: a restore decides which identities are free on a switch and
  // claims them in one step, so that clones started together cannot pick the same one.
  const releases: Array<() => void> = [];
  const release = () => {
    for (const undo of releases.splice(0)) undo();
  };
  try {
    for (const nic of plan.nics)
      if (nic.switch) releases.push(nic.switch.claimMac(nic.mac, name, nic.address));
  } catch (error) {
    release();
    throw error;
  }
  const stateDir = await newStateDir(runtime.runDir, name).catch((error) => {
    release();
    throw error;
  });
  const console = new SerialConsole(join(stateDir, 'console.log'));
  if (plan.consoleHistory) console.replay(plan.consoleHistory);
  const started = performance.now();
  let vmm: Vmm | undefined;
  try {
    const prepared = await plan.prepare(stateDir);
    vmm = await spawnVmm({ ...plan, stateDir, ...prepared });
    const launched = vmm;
    const abort = () => void launched.kill();
    plan.signal?.addEventListener('abort', abort, { once: true });
    if (plan.signal?.aborted) abort();
    const agent = openChannels(name, config, vmm, console);
    let machine: Machine | undefined;
    let died: (error: Error) => void = () => {};
    const death = new Promise<never>((_, reject) => {
      died = reject;
    });
    death.catch(() => {});
    launched.exited.then((info) => {
      if (machine) return; // from now on the machine reports its own death
      if (launched.endedWith) {
        agent.fail(launched.endedWith);
        died(launched.endedWith);
        return;
      }
      const stderr = launched.stderrTail().trim();
      // With -no-reboot, a guest that panics or reboots during boot ends QEMU with status 0.
      const why =
        info.code === 0
          ? `: the guest rebooted or powered off during boot (a kernel panic, or too little memory: it had ${config.memoryMiB} MiB)`
          : '';
      const crash = new MachineCrashedError(
        name,
        `${plan.backend.title} exited before the machine was ready (${info.signal ?? `status ${info.code}`})${restoring(plan)}${why}${stderr ? `; ${plan.backend.title} said: ${stderr}` : ''}`,
        console.tail(),
      );
      agent.fail(crash);
      died(crash); // a readiness that watches the console, not the agent, learns it here
    });
    await Promise.race([plan.ready(vmm, agent, console), death]);
    plan.signal?.removeEventListener('abort', abort);
    const readyMs = elapsedMs(started);
    plan.log(`${plan.verb}: ${config.backdoor === false ? 'ready' : 'backdoor up'} after ${readyMs} ms`);
    machine = new Machine({
      name,
      stateDir,
      accel: plan.accel,
      config,
      backend: plan.backend,
      runtime,
      profile: plan.profile,
      vmm,
      agent,
      console,
      commandTimeoutMs: plan.commandTimeoutMs,
      readyMs,
      memory: prepared.memory,
      disks: prepared.disks,
      attachedDisks: [],
      commandObservers: new Set(),
      takeSnapshot: plan.takeSnapshot,
      sshPort: plan.sshPort?.(),
      nics: plan.nics,
      releaseNics: release,
      log: plan.log,
      bootSetup: plan.bootSetup,
      bootAgain: (timeoutMs) => bootAgain(plan, machine as Machine, timeoutMs),
    });
    const ready = runtime.own(machine); // closing the runtime closes it
    const run = (script: string) => ready.succeed(script, { timeoutMs: 30_000 });
    const setupStarted = performance.now();
    await setUpGuest(agent, run, plan).catch(async (error: Error) => {
      await ready.close();
      throw new GuestSetupError(`machine ${name} ${plan.verb} but its setup failed: ${error.message}`);
    });
    plan.log(`set up in ${elapsedMs(setupStarted)} ms`);
    return ready;
  } catch (error) {
    // When the VMM died on its own, what it printed explains the failure better than a closed socket.
    const died = vmm && (await Promise.race([vmm.exited.then(() => true), sleep(200).then(() => false)]));
    const stderr = vmm?.stderrTail().trim();
    await vmm?.kill();
    vmm?.closeControl();
    const explained =
      died && stderr && !(error instanceof MachineCrashedError) && error !== vmm?.endedWith
        ? new MachineCrashedError(
            name,
            `${plan.backend.title} exited before the machine was ready${restoring(plan)}: ${stderr}`,
            console.tail(),
          )
        : error;
    console.close();
    release();
    if (!runtime.keep) await rm(stateDir, { recursive: true, force: true });
    throw explained;
  }
}

const restoring = (plan: LaunchPlan) => (plan.statePath ? `, restoring ${plan.statePath}` : '');

/**
 * Spawns the VMM on a machine's prepared files. A RAM file it shares is unlinked once mapped
 * (or once the launch failed), so it can never be left behind.
 */
async function spawnVmm(
  plan: Pick<LaunchPlan, 'name' | 'config' | 'backend' | 'runtime' | 'nics' | 'incoming' | 'timeoutMs'> & {
    stateDir: string;
    memory: MachineInternals['memory'];
    disks: string[];
    boot?: FirmwareBoot;
  },
): Promise<Vmm> {
  const { config } = plan;
  try {
    return await plan.backend.launch({
      name: plan.name,
      stateDir: plan.stateDir,
      ...bootFiles(config),
      boot: plan.boot,
      memoryMiB: config.memoryMiB,
      cpus: config.cpus,
      accel: config.accel,
      nics: config.macs.map((mac, index) => ({ socketPath: plan.nics[index]?.switch?.socketPath, mac })),
      hostNic: config.hostNic,
      memory: plan.memory,
      disks: plan.disks,
      incoming: plan.incoming,
      allowReboot: config.allowReboot,
      display: config.display,
      extraArgs: config.qemuArgs,
      ...(config.extraDisks ? { extraDisks: config.extraDisks } : {}),
      startTimeoutMs: plan.timeoutMs,
      runtime: plan.runtime,
    });
  } finally {
    if (plan.memory.share) await rm(plan.memory.path, { force: true });
  }
}

/** Connects the console and the guest agent to a VMM's channels. */
function openChannels(
  name: string,
  config: MachineConfig,
  vmm: Vmm,
  console: SerialConsole,
): BackdoorChannel {
  console.attach(vmm.channels.console);
  const agent = new BackdoorChannel(name, vmm.channels.agent, vmm.channels.transfer, () => console.tail());
  if (config.backdoor === false) agent.fail(new NoBackdoorError(name));
  return agent;
}

/**
 * Boots a machine whose VMM has exited again, in a new VMM on the same state folder and disks
 * (their contents kept), and points the machine at it once the guest is ready.
 */
async function bootAgain(plan: LaunchPlan, machine: Machine, timeoutMs: number): Promise<void> {
  const internals = machine.parts;
  const { name, config, stateDir, console } = internals;
  const boot = config.media ? await prepareMedia(config.media as MediaConfig, stateDir) : undefined;
  const memory = { path: ramFilePath(plan.runtime, stateDir, name), share: true };
  const started = performance.now();
  const vmm = await spawnVmm({
    ...plan,
    timeoutMs,
    incoming: false,
    stateDir,
    memory,
    disks: internals.disks,
    boot,
  });
  try {
    const agent = openChannels(name, config, vmm, console);
    const death = vmm.exited.then((info) => {
      throw new MachineCrashedError(
        name,
        `${plan.backend.title} exited while the machine booted again (${info.signal ?? `status ${info.code}`}): ${vmm.stderrTail().trim()}`,
        console.tail(),
      );
    });
    death.catch(() => {}); // it only counts while booting
    await Promise.race([plan.bootReady(vmm, agent, console, timeoutMs), death]);
    Object.assign(internals, { vmm, agent, memory, sshPort: plan.sshPort?.(), attachedDisks: [] });
    plan.log(`booted again: ready after ${elapsedMs(started)} ms`);
  } catch (error) {
    await vmm.kill();
    vmm.closeControl();
    throw error;
  }
}

/** The kernel, initramfs and command line the VMM boots directly, if any. */
function bootFiles(config: MachineConfig): { kernel?: string; initrd?: string; cmdline?: string } {
  if (!config.media)
    return { kernel: config.image.kernel, initrd: config.image.initrd, cmdline: config.image.cmdline };
  const { files, append } = config.media;
  return { kernel: files.kernel, initrd: files.initrd, cmdline: files.kernel ? append : undefined };
}

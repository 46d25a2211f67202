import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackdoorChannel } from '../agent/backdoor.js';
import { type AccelDecision, chooseAccel } from '../backends/accel.js';
import type { Vmm } from '../backends/backend.js';
import { type Backend, requireCapability } from '../backends/backend.js';
import { backendNamed } from '../backends/index.js';
import type { SerialConsole } from '../console/serial.js';
import { ConfigError, describeValue } from '../errors.js';
import { foreignProfile, type GuestProfile, profileNamed } from '../guest/profiles/index.js';
import type { BootSetup } from '../guest/profiles/profile.js';
import { consoleText, type Readiness, sshBanner, vmmRunning } from '../guest/readiness.js';
import { buildImage } from '../images/build.js';
import type { ImageRecipe } from '../images/recipe.js';
import type { BootImage } from '../images/types.js';
import { defaultRuntime, type Runtime } from '../runtime/runtime.js';
import { createQcow2 } from '../util/qcow2.js';
import { freePort } from '../util/sockets.js';
import type { DiskSpec, MachineConfig } from './config.js';
import { resolveExtraDisks } from './extra-disks.js';
import { hostNicFor, hostNicSetup, serviceHosts } from './host-network.js';
import { macAddress, newMachineId, ramFilePath } from './identity.js';
import type { SnapshotTaker } from './internals.js';
import { launchMachine } from './launch.js';
import type { Machine } from './machine.js';
import { isUserMedia, type MediaConfig, mediaImage, prepareMedia, resolveMedia } from './media.js';
import { DEFAULTS, type MachineOptions, parseMachineOptions } from './options.js';

/** Keep state folders (console logs, VMM logs) of machines after they close, for inspection. */
export function keepMachineState(keep = true): void {
  if (typeof keep !== 'boolean')
    throw new ConfigError(`keepMachineState takes true or false, not ${describeValue(keep)}`);
  defaultRuntime().setKeep(keep);
}

export interface ResolvedMachine {
  name: string;
  config: MachineConfig;
  backend: Backend;
  runtime: Runtime;
  profile: GuestProfile;
  accel: AccelDecision;
  timeoutMs: number;
  commandTimeoutMs: number;
}

/** Validates options and settles everything the VMM's device model will depend on. */
export async function resolveMachine(input: MachineOptions): Promise<ResolvedMachine> {
  const options = parseMachineOptions(input);
  const name = options.name;
  const memoryMiB = options.memoryMiB ?? DEFAULTS.memoryMiB;
  const cpus = options.cpus ?? DEFAULTS.cpus;
  const timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs;
  const commandTimeoutMs = options.commandTimeoutMs ?? DEFAULTS.commandTimeoutMs;
  const backend = backendNamed(options.backend);
  const runtime = options.runtime ?? defaultRuntime();
  const wanted = options.image ?? 'tiny';
  const simulated = backend.simulated;
  const media =
    !simulated && isUserMedia(wanted)
      ? await resolveMedia(wanted, options.firmware ?? 'bios', options.bootOrder)
      : undefined;
  if (!media && !simulated && (options.firmware || options.bootOrder)) {
    throw new ConfigError(
      'startMachine options: firmware and bootOrder apply to media you bring (image: { iso } or { disk })',
    );
  }
  const backdoor = options.backdoor ?? !media;
  if (backdoor && options.readyWhen !== undefined) {
    throw new ConfigError('startMachine options: readyWhen is for machines started with backdoor: false');
  }
  const image = simulated
    ? simulated.image
    : media
      ? mediaImage(media)
      : await resolveImage(wanted as string | BootImage | ImageRecipe, runtime, options.log);
  // An image with a root disk has it first (/dev/vda), as an overlay on the image's base.
  const disks: DiskSpec[] = [
    ...(image.disk ? [{ sizeMiB: image.diskSizeMiB ?? 0, base: image.disk }] : []),
    ...(options.disks ?? []).map((disk) => ({ sizeMiB: disk.sizeMiB })),
  ];
  const profile = backdoor ? profileNamed(image.profile) : foreignProfile;
  const accel: AccelDecision = simulated
    ? { accel: simulated.accel, reason: `the ${backend.title} backend simulates its guests` }
    : await chooseAccel(options.accel ?? 'auto', runtime);
  if (simulated && options.accel && options.accel !== 'auto') {
    requireCapability(backend, 'accels', options.accel, `accel "${options.accel}" asks for it`);
  }
  requireCapability(backend, 'accels', accel.accel, accel.reason);
  if (options.display) requireCapability(backend, 'display', undefined, 'display: true asks for a screen');
  const networks = options.networks ?? [];
  const config: MachineConfig = {
    backend: backend.name,
    image,
    memoryMiB,
    cpus,
    accel: accel.accel,
    nics: networks.length,
    macs: networks.map((_, index) => macAddress(name, index)),
    disks,
    qemuArgs: options.qemuArgs ?? [],
    ...(options.extraDisks?.length ? { extraDisks: await resolveExtraDisks(options.extraDisks) } : {}),
    ...(options.allowReboot ? { allowReboot: true } : {}),
    ...(options.display ? { display: true } : {}),
    hostNic: backend.capabilities.hostNetwork
      ? hostNicFor(name, options.internet ?? false, options.hostServices ?? {})
      : undefined,
    ...(media ? { media } : {}),
    ...(backdoor ? {} : { backdoor: false }),
  };
  if (!backend.capabilities.hostNetwork && (options.internet || options.hostServices)) {
    requireCapability(backend, 'hostNetwork', undefined, 'internet and hostServices need it');
  }
  return { name, config, backend, runtime, profile, accel, timeoutMs, commandTimeoutMs };
}

/** How a machine without the backdoor counts as up, and the SSH forward it gets. */
function foreignReadiness(readyWhen: MachineOptions['readyWhen']): {
  readiness: Readiness;
  ssh: { port?: number };
} {
  const ssh: { port?: number } = {};
  if (readyWhen === 'ssh') return { readiness: sshBanner(() => ssh.port), ssh };
  return { readiness: readyWhen === undefined ? vmmRunning : consoleText(readyWhen), ssh };
}

/** The hostname of a guest booted for the boot cache, until it is given its own. */
export const NEUTRAL_HOSTNAME = 'vmkit';

/**
 * Boots a machine and resolves once its guest agent answers. `neutral`: the guest is set up
 * without anything of its own (hostname, switch NIC addresses, hosts lines), so that its state
 * can be saved for any machine of its configuration; the caller then gives it its identity.
 */
export async function bootMachine(options: MachineOptions, takeSnapshot: SnapshotTaker): Promise<Machine> {
  return bootResolved(await resolveMachine(options), options, takeSnapshot); // validates every option first
}

/** bootMachine, for options resolveMachine has already checked and settled. */
export async function bootResolved(
  resolved: ResolvedMachine,
  options: MachineOptions,
  takeSnapshot: SnapshotTaker,
  neutral = false,
): Promise<Machine> {
  const { name, config, runtime, profile, timeoutMs } = resolved;
  const log = options.log ?? (() => {});
  log(`${resolved.accel.accel.toUpperCase()}: ${resolved.accel.reason}`);
  const foreign = config.backdoor === false ? foreignReadiness(options.readyWhen) : undefined;
  const ready = async (vmm: Vmm, agent: BackdoorChannel, console: SerialConsole, waitMs: number) => {
    if (!foreign) return profile.readiness.wait({ machine: name, agent, console, timeoutMs: waitMs });
    if (resolved.backend.capabilities.hostNetwork && config.hostNic) {
      const port = await freePort();
      await vmm.addPortForward(port, 22);
      foreign.ssh.port = port;
    }
    await foreign.readiness.wait({ machine: name, agent, console, timeoutMs: waitMs });
  };
  const bootSetup: BootSetup = {
    hostname: name,
    nics: (options.networks ?? []).map((network, index) => ({ index, address: network.address })),
    hostNic: hostNicSetup(config),
    hosts: { ...serviceHosts(options.hostServices ?? {}), ...options.hosts },
    machineId: newMachineId(),
  };
  // A neutral boot (saved for the boot cache) keeps the image's machine ID: the start gives its own after.
  const { machineId: _ownId, ...neutralSetup } = bootSetup;
  return launchMachine({
    ...resolved,
    nics: (options.networks ?? []).map((network, index) => ({
      switch: network.switch,
      mac: config.macs[index] as string,
      address: network.address,
    })),
    log,
    signal: options.signal,
    incoming: false,
    verb: 'booted',
    async prepare(stateDir) {
      const memory = { path: ramFilePath(runtime, stateDir, name), share: true };
      if (resolved.backend.simulated) return { memory, disks: [] }; // a simulated guest has no disks
      const diskPaths: string[] = [];
      for (const [index, disk] of config.disks.entries()) {
        const path = join(stateDir, `disk${index}.qcow2`);
        await createQcow2(path, { base: disk.base, sizeMiB: disk.sizeMiB });
        diskPaths.push(path);
      }
      const boot = config.media ? await prepareMedia(config.media as MediaConfig, stateDir) : undefined;
      return { memory, disks: diskPaths, boot };
    },
    ready: (vmm, agent, console) => ready(vmm, agent, console, timeoutMs),
    bootReady: ready,
    sshPort: () => foreign?.ssh.port,
    bootSetup,
    setupScript: profile.afterBoot(
      neutral
        ? {
            ...neutralSetup,
            hostname: NEUTRAL_HOSTNAME,
            nics: bootSetup.nics.map(({ index }) => ({ index })),
            hosts: {},
          }
        : bootSetup,
    ),
    takeSnapshot,
  });
}

async function resolveImage(
  image: string | BootImage | ImageRecipe,
  runtime: Runtime,
  log?: (line: string) => void,
): Promise<BootImage> {
  // A first build downloads and unpacks packages: say what it is doing.
  if (typeof image === 'string' || !('kernel' in image)) {
    return buildImage(image, { runtime, onProgress: (line) => log?.(`image: ${line}`) });
  }
  for (const file of [image.kernel, image.initrd, ...(image.disk ? [image.disk] : [])]) {
    await stat(file).catch(() => {
      throw new ConfigError(
        `image ${image.name}: ${file} does not exist (rebuild it with \`vmkit image build ${image.name}\`)`,
      );
    });
  }
  return { ...image, profile: image.profile ?? image.name };
}

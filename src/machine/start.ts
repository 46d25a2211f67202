import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { type AccelDecision, chooseAccel } from '../hypervisor/accel.js';
import { keepRunFolder } from '../hypervisor/processes.js';
import { buildImage } from '../image/index.js';
import type { BootImage } from '../image/types.js';
import { runTool } from '../util/exec.js';
import type { MachineConfig } from './config.js';
import { launchMachine } from './launch.js';
import { type Machine, shellQuote } from './machine.js';
import { DEFAULTS, type MachineOptions, validateName, validatePositive } from './options.js';

let keepState = false;

/** Keep state folders (console logs, QEMU logs) of machines after they close, for inspection. */
export function keepMachineState(keep = true): void {
  keepState = keep;
  keepRunFolder(keep);
}

export const shouldKeepState = () => keepState;

export interface ResolvedMachine {
  name: string;
  config: MachineConfig;
  accel: AccelDecision;
  timeoutMs: number;
  commandTimeoutMs: number;
}

/** Validates options and settles everything QEMU's device model will depend on. */
export async function resolveMachine(options: MachineOptions): Promise<ResolvedMachine> {
  const name = validateName(options.name);
  const memoryMiB = validatePositive('memoryMiB', options.memoryMiB, DEFAULTS.memoryMiB, 1024 * 1024);
  const cpus = validatePositive('cpus', options.cpus, DEFAULTS.cpus, 256);
  const timeoutMs = validatePositive('timeoutMs', options.timeoutMs, DEFAULTS.timeoutMs, 24 * 3600_000);
  const commandTimeoutMs = validatePositive(
    'commandTimeoutMs',
    options.commandTimeoutMs,
    DEFAULTS.commandTimeoutMs,
    24 * 3600_000,
  );
  const disks = (options.disks ?? []).map((disk, index) => ({
    sizeMiB: validatePositive(`disks[${index}].sizeMiB`, disk.sizeMiB, 0, 16 * 1024 * 1024),
  }));
  const image = await resolveImage(options.image ?? 'tiny', options.log);
  const accel = await chooseAccel(options.accel ?? 'auto');
  const networks = options.networks ?? [];
  const config: MachineConfig = {
    image,
    memoryMiB,
    cpus,
    accel: accel.accel,
    nics: networks.length,
    macs: networks.map((_, index) => macAddress(name, index)),
    disks,
    qemuArgs: options.qemuArgs ?? [],
  };
  return { name, config, accel, timeoutMs, commandTimeoutMs };
}

/** Boots a machine and resolves once its backdoor answers. */
export async function startMachine(options: MachineOptions): Promise<Machine> {
  const { name, config, accel, timeoutMs, commandTimeoutMs } = await resolveMachine(options);
  const log = options.log ?? (() => {});
  log(`${accel.accel.toUpperCase()}: ${accel.reason}`);
  return launchMachine({
    name,
    config,
    accel,
    switches: (options.networks ?? []).map((network) => network.switch),
    timeoutMs,
    commandTimeoutMs,
    keepState: shouldKeepState,
    log,
    signal: options.signal,
    incoming: false,
    verb: 'booted',
    async prepare(stateDir) {
      const diskPaths: string[] = [];
      for (const [index, disk] of config.disks.entries()) {
        const path = join(stateDir, `disk${index}.qcow2`);
        await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', path, `${disk.sizeMiB}M`]);
        diskPaths.push(path);
      }
      return { memory: { path: ramFilePath(stateDir, name), share: true }, disks: diskPaths };
    },
    ready: (_vmm, backdoor) => backdoor.waitForBanner(timeoutMs),
    setupScript: setupScript(name, options),
  });
}

/**
 * Where a booting machine's RAM file goes: shared memory when there is some, so guest RAM never
 * pages to disk. The file is unlinked as soon as QEMU has mapped it.
 */
export function ramFilePath(stateDir: string, name: string): string {
  const dir = existsSync('/dev/shm') ? '/dev/shm' : stateDir;
  return join(dir, `vmkit-${process.pid}-${name}-${randomBytes(4).toString('hex')}.ram`);
}

async function resolveImage(image: string | BootImage, log?: (line: string) => void): Promise<BootImage> {
  // A first build downloads and unpacks packages: say what it is doing.
  if (typeof image === 'string') return buildImage(image, { onProgress: (line) => log?.(`image: ${line}`) });
  for (const file of [image.kernel, image.initrd]) {
    await stat(file).catch(() => {
      throw new ConfigError(
        `image ${image.name}: ${file} does not exist (rebuild it with \`vmkit image build ${image.name}\`)`,
      );
    });
  }
  return image;
}

/** Hostname, interfaces and /etc/hosts, applied over the backdoor right after boot. */
function setupScript(name: string, options: MachineOptions): string {
  const lines = [`hostname ${shellQuote(name)}`];
  (options.networks ?? []).forEach((network, index) => {
    lines.push(`ip link set eth${index} up`);
    if (network.address) lines.push(`ip addr add ${shellQuote(network.address)} dev eth${index}`);
  });
  for (const [host, address] of Object.entries(options.hosts ?? {})) {
    lines.push(`echo ${shellQuote(`${address} ${host}`)} >> /etc/hosts`);
  }
  return lines.join('\n');
}

/** A stable, locally administered MAC per machine name and NIC. */
export function macAddress(name: string, index: number): string {
  const hash = createHash('sha256').update(`${name}/${index}`).digest();
  return ['52', '54', ...[0, 1, 2, 3].map((i) => (hash[i] ?? 0).toString(16).padStart(2, '0'))].join(':');
}

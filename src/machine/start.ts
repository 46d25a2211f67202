import { createHash } from 'node:crypto';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, MachineCrashedError, VmkitError } from '../errors.js';
import { BackdoorChannel } from '../guest/backdoor.js';
import { SerialConsole } from '../guest/console.js';
import { chooseAccel } from '../hypervisor/accel.js';
import { currentRunDir, keepRunFolder } from '../hypervisor/processes.js';
import { QemuProcess } from '../hypervisor/qemu.js';
import { buildImage } from '../image/index.js';
import type { BootImage } from '../image/types.js';
import { elapsedMs } from '../util/time.js';
import { Machine, shellQuote } from './machine.js';
import { DEFAULTS, type MachineOptions, validateName, validatePositive } from './options.js';

let keepState = false;

/** Keep state folders (console logs, QEMU logs) of machines after they close, for inspection. */
export function keepMachineState(keep = true): void {
  keepState = keep;
  keepRunFolder(keep);
}

/** Boots a machine and resolves once its backdoor answers. */
export async function startMachine(options: MachineOptions): Promise<Machine> {
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
  const log = options.log ?? (() => {});
  const image = await resolveImage(options.image ?? 'tiny');
  const accel = await chooseAccel(options.accel ?? 'auto');
  log(`${accel.accel.toUpperCase()}: ${accel.reason}`);

  const stateDir = join(currentRunDir(), name);
  try {
    await mkdir(stateDir);
  } catch {
    throw new ConfigError(`a machine named ${name} is already running in this process`);
  }
  const console = new SerialConsole(join(stateDir, 'console.log'));
  const started = performance.now();
  let vmm: QemuProcess | undefined;
  try {
    vmm = await QemuProcess.launch({
      name,
      stateDir,
      kernel: image.kernel,
      initrd: image.initrd,
      cmdline: image.cmdline,
      memoryMiB,
      cpus,
      accel: accel.accel,
      nics: (options.networks ?? []).map((network, index) => ({
        socketPath: network.switch.socketPath,
        mac: macAddress(name, index),
      })),
      extraArgs: options.qemuArgs,
      startTimeoutMs: timeoutMs,
    });
    const launched = vmm;
    const abort = () => void launched.kill();
    options.signal?.addEventListener('abort', abort, { once: true });
    if (options.signal?.aborted) abort();
    console.attach(vmm.sockets.console);
    const backdoor = new BackdoorChannel(name, vmm.sockets.shell, vmm.sockets.transfer, () => console.tail());
    let machine: Machine | undefined;
    launched.exited.then((info) => {
      if (machine) return; // from now on the machine reports its own death
      const stderr = launched.stderrTail().trim();
      backdoor.fail(
        new MachineCrashedError(
          name,
          `QEMU exited during boot (${info.signal ?? `status ${info.code}`})${stderr ? `; QEMU said: ${stderr}` : ''}`,
          console.tail(),
        ),
      );
    });
    await backdoor.waitForBanner(timeoutMs);
    options.signal?.removeEventListener('abort', abort);
    const bootMs = elapsedMs(started);
    log(`backdoor up after ${bootMs} ms`);
    machine = new Machine(
      name,
      stateDir,
      accel,
      vmm,
      backdoor,
      console,
      commandTimeoutMs,
      () => keepState,
      bootMs,
    );
    const booted = machine;
    await booted.succeed(setupScript(name, options), { timeoutMs: 30_000 }).catch(async (error: Error) => {
      await booted.close();
      throw new VmkitError(`machine ${name} booted but its setup failed: ${error.message}`);
    });
    return booted;
  } catch (error) {
    await vmm?.kill();
    vmm?.qmp.close();
    console.close();
    if (!keepState) await rm(stateDir, { recursive: true, force: true });
    throw error;
  }
}

async function resolveImage(image: string | BootImage): Promise<BootImage> {
  if (typeof image === 'string') return buildImage(image);
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

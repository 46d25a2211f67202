import { join } from 'node:path';
import { ConfigError } from '../../errors.js';
import type { ExtraDisk, FirmwareBoot, VmmSpec } from '../backend.js';
import { MACHINE_OUTBOUND } from '../outbound/launch.js';
import { opt, outboundArgs, readOnlyDiskArgs, SANDBOX_ARGS, serviceNicArgs } from './devices.js';

/** Socket file names inside a machine's state folder: short, since the path limit is 107 bytes. */
export const SOCKETS = {
  console: 'con.sock',
  shell: 'sh.sock',
  transfer: 'xfer.sock',
  qmp: 'qmp.sock',
} as const;

/** The device id of switch NIC `index`, for set_link. */
export const NIC_ID = (index: number) => `nic${index}`;
/** The user-mode netdev of the host NIC, for hostfwd_add. */
export const HOST_NETDEV = 'hostnet';

/** The hub that joins the NIC out's slirp to its relay (switch NICs without a switch use 1000+). */
const OUTBOUND_HUB = 3000;

/**
 * The PCI slot of the first extra disk; the next ones follow, up to the last slot (0x1f). High and
 * given: QEMU creates `-device` disks before the `-drive if=virtio` ones, so without a slot an
 * extra disk would take the root disk's slot and become /dev/vda.
 */
const EXTRA_DISK_FIRST_SLOT = 0x18;
const MAX_EXTRA_DISKS = 0x20 - EXTRA_DISK_FIRST_SLOT;

/** The QEMU command line for a spec, as an argument vector. */
export function qemuArgs(spec: Omit<VmmSpec, 'runtime' | 'startTimeoutMs'>): string[] {
  const sock = (name: keyof typeof SOCKETS) => opt(join(spec.stateDir, SOCKETS[name]));
  const share = spec.memory.share ? 'on' : 'off';
  // Detached, QEMU listens and anyone may attach later; otherwise vmkit listens and QEMU connects.
  const serve = spec.detached ? ',server=on,wait=off' : '';
  const consoleLog = spec.detached ? `,logfile=${opt(join(spec.stateDir, 'console.log'))},logappend=on` : '';
  const order = bootIndexes(spec);
  const options: Array<[string, string?]> = [
    ['-name', spec.name],
    [
      '-object',
      `memory-backend-file,id=ram0,size=${spec.memoryMiB}M,mem-path=${opt(spec.memory.path)},share=${share}`,
    ],
    ['-machine', 'pc,memory-backend=ram0'],
    ['-accel', spec.accel],
    ...(spec.accel === 'kvm' ? [['-cpu', 'host'] as [string, string]] : []),
    ['-m', String(spec.memoryMiB)],
    ['-smp', String(spec.cpus)],
    ['-nodefaults'],
    ['-no-user-config'],
    ['-display', 'none'],
    // A guest reboot ends QEMU unless reboots are allowed (reboot() switches it for a moment).
    ...(spec.allowReboot ? [] : [['-no-reboot'] as [string]]),
    ...bootOptions(spec),
    ['-chardev', `socket,id=console,path=${sock('console')}${serve}${consoleLog}`],
    ['-serial', 'chardev:console'],
    ['-chardev', `socket,id=qmp,path=${sock('qmp')}${serve}`],
    ['-mon', 'chardev=qmp,mode=control'],
    ['-device', 'virtio-serial-pci,id=serial0'],
    // The agent's command channel is a port, not a console: QEMU drops console bytes when
    // the host reads slowly, and throttles ports instead.
    ['-chardev', `socket,id=shell,path=${sock('shell')}${serve}`],
    ['-device', 'virtserialport,chardev=shell,name=vmkit.shell'],
    ['-chardev', `socket,id=transfer,path=${sock('transfer')}${serve}`],
    ['-device', 'virtserialport,chardev=transfer,name=vmkit.transfer'],
    ['-device', 'virtio-rng-pci'],
  ];
  spec.nics.forEach((nic, index) => {
    const backend = nic.socketPath
      ? `stream,id=net${index},server=off,addr.type=unix,addr.path=${opt(nic.socketPath)}`
      : `hubport,id=net${index},hubid=${1000 + index}`; // a hub with nothing else on it
    options.push(
      ['-netdev', backend],
      ['-device', `virtio-net-pci,netdev=net${index},mac=${nic.mac},id=${NIC_ID(index)}`],
    );
  });
  if (spec.hostNic) {
    const { hostNic } = spec;
    // restrict=on: the guest reaches no address through it but the rules given here. Never
    // off: slirp then maps its host address (10.0.2.2) to the host's loopback.
    const rules = hostNic.services.map(
      (service) => `,guestfwd=tcp:${service.guestAddress}:${service.port}-tcp:127.0.0.1:${service.hostPort}`,
    );
    options.push(
      ['-netdev', `user,id=${HOST_NETDEV},restrict=on${rules.join('')}`],
      ['-device', `virtio-net-pci,netdev=${HOST_NETDEV},mac=${hostNic.mac},id=hostnic${at(order.network)}`],
    );
    if (hostNic.internet) {
      const mac = hostNic.outboundMac ?? hostNic.mac;
      const out = outboundArgs('out', spec.stateDir, MACHINE_OUTBOUND, mac, OUTBOUND_HUB);
      for (let i = 0; i < out.length; i += 2) options.push([out[i] as string, out[i + 1] as string]);
    }
  }
  // The disk the firmware boots is the user's disk, else the first disk (the one an installer writes).
  if (spec.boot?.disk) options.push(...virtioDisk(spec.boot.disk, 'bootdisk', order.disk));
  spec.disks.forEach((disk, index) => {
    options.push(
      ...virtioDisk(disk, `disk${index}`, index === 0 && !spec.boot?.disk ? order.disk : undefined),
    );
  });
  spec.extraDisks?.forEach((disk, index) => {
    options.push(...extraDisk(disk, index));
  });
  // A standard VGA card: text-mode virtual terminals, screendump and the PS/2 keyboard for send-key.
  if (spec.display) options.push(['-vga', 'std']);
  if (spec.incoming) options.push(['-incoming', 'defer']);
  if (spec.paused) options.push(['-S']);
  const args = options.flatMap(([flag, value]) => (value === undefined ? [flag] : [flag, value]));
  return [...args, ...laterDevices(spec), ...(spec.extraArgs ?? [])];
}

/**
 * Service NICs, read-only disks, the NIC out and the sandbox, after everything else (where the
 * fleet's instances, whose saved states know their devices, have always had them).
 */
function laterDevices(spec: Omit<VmmSpec, 'runtime' | 'startTimeoutMs'>): string[] {
  if (spec.outbound && spec.hostNic?.internet) {
    throw new ConfigError(`${spec.name}: a NIC out (outbound) and a host NIC with internet access: one only`);
  }
  return [
    ...(spec.serviceNics ?? []).flatMap(serviceNicArgs),
    ...(spec.readOnlyDisks ?? []).flatMap(readOnlyDiskArgs),
    ...(spec.outbound
      ? outboundArgs('out', spec.stateDir, spec.outbound.net, spec.outbound.mac, OUTBOUND_HUB)
      : []),
    ...(spec.sandbox ? SANDBOX_ARGS : []),
  ];
}

type BootDevice = FirmwareBoot['order'][number];

/** Direct kernel boot, or the firmware and its boot media. */
function bootOptions(
  spec: Pick<VmmSpec, 'kernel' | 'initrd' | 'cmdline' | 'boot'>,
): Array<[string, string?]> {
  const options: Array<[string, string?]> = [];
  const { boot } = spec;
  if (boot?.firmware === 'uefi' && boot.uefiCode && boot.uefiVars) {
    options.push(
      ['-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${opt(boot.uefiCode)}`],
      ['-drive', `if=pflash,format=raw,unit=1,file=${opt(boot.uefiVars)}`],
    );
  }
  if (spec.kernel) {
    options.push(['-kernel', spec.kernel]);
    if (spec.initrd) options.push(['-initrd', spec.initrd]);
    if (spec.cmdline) options.push(['-append', spec.cmdline]);
  }
  if (boot?.cdrom) {
    const index = bootIndexes(spec).cdrom;
    options.push(
      ['-drive', `file=${opt(boot.cdrom)},media=cdrom,readonly=on,if=none,id=cdrom`],
      ['-device', `ide-cd,drive=cdrom,bus=ide.0,unit=0${at(index)}`],
    );
  }
  return options;
}

/**
 * The `bootindex` of each boot device in the machine's boot order (none for a direct kernel
 * boot). Per-device indexes, not `-boot order`: OVMF ignores that option, and SeaBIOS reads both.
 * Devices left out of the order are tried after those in it.
 */
function bootIndexes(spec: Pick<VmmSpec, 'kernel' | 'boot'>): Partial<Record<BootDevice, number>> {
  if (!spec.boot || spec.kernel) return {};
  return Object.fromEntries(spec.boot.order.map((device, index) => [device, index + 1]));
}

const at = (bootindex: number | undefined) => (bootindex === undefined ? '' : `,bootindex=${bootindex}`);

/** A qcow2 virtio disk; one the firmware may boot from is a device of its own, to carry its bootindex. */
function virtioDisk(file: string, id: string, bootindex: number | undefined): Array<[string, string?]> {
  if (bootindex === undefined) return [['-drive', `file=${opt(file)},if=virtio,format=qcow2,id=${id}`]];
  return [
    ['-drive', `file=${opt(file)},if=none,format=qcow2,id=${id}`],
    ['-device', `virtio-blk-pci,drive=${id}${at(bootindex)}`],
  ];
}

/** The drive ids qemuArgs gives the machine's own disks. */
const OWN_DRIVE_ID = /^(disk\d+|bootdisk|cdrom)$/;

/**
 * Extra disk `index`: the file as it is, in its own PCI slot. Its drive id is its serial, unless
 * that is the id of one of the machine's own disks: then one with a dot, which serials never have.
 */
function extraDisk(disk: ExtraDisk, index: number): Array<[string, string?]> {
  const slot = EXTRA_DISK_FIRST_SLOT + index;
  if (index >= MAX_EXTRA_DISKS) throw new ConfigError(`at most ${MAX_EXTRA_DISKS} extra disks`);
  const id = OWN_DRIVE_ID.test(disk.serial) ? `extra.${index}` : disk.serial;
  const readOnly = disk.readOnly ? ',readonly=on' : '';
  return [
    ['-drive', `file=${opt(disk.path)},format=${disk.format},if=none,id=${id}${readOnly}`],
    ['-device', `virtio-blk-pci,drive=${id},serial=${disk.serial},addr=0x${slot.toString(16)}`],
  ];
}

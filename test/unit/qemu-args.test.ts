import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { VmmSpec } from '../../src/backends/backend.js';
import { backendNamed, requireCapability } from '../../src/backends/index.js';
import { qemuArgs, SOCKETS } from '../../src/backends/qemu/args.js';
import { CapabilityError, ConfigError } from '../../src/errors.js';

type Spec = Omit<VmmSpec, 'runtime' | 'startTimeoutMs'>;

/** Two NICs (one on a switch, one on nothing), two disks, TCG, shared RAM, no incoming. */
const base: Spec = {
  name: 'web',
  stateDir: '/run/vm/web',
  kernel: '/img/vmlinuz',
  initrd: '/img/initrd.img',
  cmdline: 'console=ttyS0 quiet',
  memoryMiB: 256,
  cpus: 2,
  accel: 'tcg',
  nics: [{ socketPath: '/run/sw/vlan1.sock', mac: '52:54:00:00:00:01' }, { mac: '52:54:00:00:00:02' }],
  memory: { path: '/dev/shm/vmkit-web.ram', share: true },
  disks: ['/run/vm/web/disk0.qcow2', '/run/vm/web/disk1.qcow2'],
};

const spec = (overrides: Partial<Spec> = {}): Spec => ({ ...base, ...overrides });

/** The value after the n-th (0-based) occurrence of `flag`. */
function firstValue(args: string[], flag: string, n = 0): string | undefined {
  let seen = 0;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag) {
      if (seen === n) return args[i + 1];
      seen++;
    }
  }
  return undefined;
}

/** Every value given to `flag`, in order. */
function valuesOf(args: string[], flag: string): string[] {
  return args.flatMap((arg, i) => (arg === flag ? [args[i + 1] as string] : []));
}

describe('qemuArgs', () => {
  test('socket file names are short and fixed', () => {
    assert.deepEqual(SOCKETS, {
      console: 'con.sock',
      shell: 'sh.sock',
      transfer: 'xfer.sock',
      qmp: 'qmp.sock',
    });
  });

  test('golden: the full argument vector of a representative spec', () => {
    assert.deepEqual(qemuArgs(base), [
      '-name',
      'web',
      '-object',
      'memory-backend-file,id=ram0,size=256M,mem-path=/dev/shm/vmkit-web.ram,share=on',
      '-machine',
      'pc,memory-backend=ram0',
      '-accel',
      'tcg',
      '-m',
      '256',
      '-smp',
      '2',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-no-reboot',
      '-kernel',
      '/img/vmlinuz',
      '-initrd',
      '/img/initrd.img',
      '-append',
      'console=ttyS0 quiet',
      '-chardev',
      'socket,id=console,path=/run/vm/web/con.sock',
      '-serial',
      'chardev:console',
      '-chardev',
      'socket,id=qmp,path=/run/vm/web/qmp.sock',
      '-mon',
      'chardev=qmp,mode=control',
      '-device',
      'virtio-serial-pci,id=serial0',
      '-chardev',
      'socket,id=shell,path=/run/vm/web/sh.sock',
      '-device',
      'virtserialport,chardev=shell,name=vmkit.shell',
      '-chardev',
      'socket,id=transfer,path=/run/vm/web/xfer.sock',
      '-device',
      'virtserialport,chardev=transfer,name=vmkit.transfer',
      '-device',
      'virtio-rng-pci',
      '-netdev',
      'stream,id=net0,server=off,addr.type=unix,addr.path=/run/sw/vlan1.sock',
      '-device',
      'virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,id=nic0',
      '-netdev',
      'hubport,id=net1,hubid=1001',
      '-device',
      'virtio-net-pci,netdev=net1,mac=52:54:00:00:00:02,id=nic1',
      '-drive',
      'file=/run/vm/web/disk0.qcow2,if=virtio,format=qcow2,id=disk0',
      '-drive',
      'file=/run/vm/web/disk1.qcow2,if=virtio,format=qcow2,id=disk1',
    ]);
  });

  test('does not modify the spec it is given', () => {
    const copy = structuredClone(base);
    qemuArgs(base);
    assert.deepEqual(base, copy);
  });

  test('no NICs and no disks: no -netdev, -drive or NIC devices', () => {
    const args = qemuArgs(spec({ nics: [], disks: [] }));
    assert.deepEqual(valuesOf(args, '-netdev'), []);
    assert.deepEqual(valuesOf(args, '-drive'), []);
    assert.equal(args.at(-2), '-device');
    assert.equal(args.at(-1), 'virtio-rng-pci');
  });

  test('an unplugged NIC gets a hub of its own, numbered 1000 + its index', () => {
    const args = qemuArgs(spec({ nics: [{ mac: 'a' }, { mac: 'b' }, { mac: 'c' }] }));
    assert.deepEqual(valuesOf(args, '-netdev'), [
      'hubport,id=net0,hubid=1000',
      'hubport,id=net1,hubid=1001',
      'hubport,id=net2,hubid=1002',
    ]);
  });

  test("accel 'tcg' has no -cpu", () => {
    assert.equal(qemuArgs(base).includes('-cpu'), false);
  });

  test("accel 'kvm' adds -cpu host right after -accel kvm", () => {
    const args = qemuArgs(spec({ accel: 'kvm' }));
    const at = args.indexOf('-accel');
    assert.deepEqual(args.slice(at, at + 6), ['-accel', 'kvm', '-cpu', 'host', '-m', '256']);
    assert.equal(valuesOf(args, '-cpu').length, 1);
    // Everything else is as under TCG.
    const withoutCpu = args.filter((_, i) => !(args[i] === '-cpu' || args[i - 1] === '-cpu'));
    assert.deepEqual(
      withoutCpu,
      qemuArgs(base).map((arg) => (arg === 'tcg' ? 'kvm' : arg)),
    );
  });

  test('incoming: true appends -incoming defer after the disks and before extraArgs', () => {
    const args = qemuArgs(spec({ incoming: true, extraArgs: ['-S', '-d', 'guest_errors'] }));
    assert.deepEqual(args.slice(-7), [
      '-drive',
      'file=/run/vm/web/disk1.qcow2,if=virtio,format=qcow2,id=disk1',
      '-incoming',
      'defer',
      '-S',
      '-d',
      'guest_errors',
    ]);
    assert.deepEqual(args, [...qemuArgs(base), '-incoming', 'defer', '-S', '-d', 'guest_errors']);
  });

  test('incoming false or absent: no -incoming', () => {
    assert.equal(qemuArgs(spec({ incoming: false })).includes('-incoming'), false);
    assert.equal(qemuArgs(base).includes('-incoming'), false);
  });

  test('share: false maps guest RAM copy-on-write (share=off)', () => {
    assert.equal(
      firstValue(qemuArgs(spec({ memory: { path: '/snap/ram', share: false } })), '-object'),
      'memory-backend-file,id=ram0,size=256M,mem-path=/snap/ram,share=off',
    );
  });

  test('memory size and CPU count come from the spec', () => {
    const args = qemuArgs(spec({ memoryMiB: 1024, cpus: 4 }));
    assert.equal(firstValue(args, '-m'), '1024');
    assert.equal(firstValue(args, '-smp'), '4');
    assert.equal(
      firstValue(args, '-object'),
      'memory-backend-file,id=ram0,size=1024M,mem-path=/dev/shm/vmkit-web.ram,share=on',
    );
  });

  test('a comma in a path is doubled inside option strings', () => {
    const args = qemuArgs(
      spec({
        stateDir: '/tmp/a,b',
        nics: [{ socketPath: '/tmp/sw,1.sock', mac: '52:54:00:00:00:01' }],
        memory: { path: '/dev/shm/r,am', share: true },
        disks: ['/tmp/a,b/d,0.qcow2'],
      }),
    );
    assert.deepEqual(valuesOf(args, '-chardev'), [
      'socket,id=console,path=/tmp/a,,b/con.sock',
      'socket,id=qmp,path=/tmp/a,,b/qmp.sock',
      'socket,id=shell,path=/tmp/a,,b/sh.sock',
      'socket,id=transfer,path=/tmp/a,,b/xfer.sock',
    ]);
    assert.equal(
      firstValue(args, '-object'),
      'memory-backend-file,id=ram0,size=256M,mem-path=/dev/shm/r,,am,share=on',
    );
    assert.deepEqual(valuesOf(args, '-netdev'), [
      'stream,id=net0,server=off,addr.type=unix,addr.path=/tmp/sw,,1.sock',
    ]);
    assert.deepEqual(valuesOf(args, '-drive'), ['file=/tmp/a,,b/d,,0.qcow2,if=virtio,format=qcow2,id=disk0']);
  });

  test('kernel, initrd and cmdline are whole arguments, not option strings: commas stay single', () => {
    const args = qemuArgs(spec({ kernel: '/k,1', initrd: '/i,1', cmdline: 'a=1,2 b' }));
    assert.equal(firstValue(args, '-kernel'), '/k,1');
    assert.equal(firstValue(args, '-initrd'), '/i,1');
    assert.equal(firstValue(args, '-append'), 'a=1,2 b');
  });

  test('extraArgs come last, exactly as given', () => {
    const extra = ['-device', 'e1000,netdev=x', '-name', 'override', ''];
    const args = qemuArgs(spec({ extraArgs: extra }));
    assert.deepEqual(args.slice(-extra.length), extra);
    assert.deepEqual(args.slice(0, -extra.length), qemuArgs(base));
  });

  test('empty extraArgs add nothing', () => {
    assert.deepEqual(qemuArgs(spec({ extraArgs: [] })), qemuArgs(base));
  });

  test('a restricted host NIC: user-mode netdev with one guestfwd per host service, after the switch NICs', () => {
    const args = qemuArgs(
      spec({
        hostNic: {
          mac: '52:54:00:aa:bb:cc',
          internet: false,
          services: [{ guestAddress: '10.0.2.100', port: 8080, hostPort: 8080 }],
        },
      }),
    );
    const netdevs = args.flatMap((arg, i) => (args[i - 1] === '-netdev' ? [arg] : []));
    assert.equal(
      netdevs.at(-1),
      'user,id=hostnet,restrict=on,guestfwd=tcp:10.0.2.100:8080-tcp:127.0.0.1:8080',
    );
    const devices = args.flatMap((arg, i) => (args[i - 1] === '-device' ? [arg] : []));
    assert.equal(devices.at(-1), 'virtio-net-pci,netdev=hostnet,mac=52:54:00:aa:bb:cc,id=hostnic');
  });

  test('internet: true keeps the host NIC restricted and adds a NIC out through the relay', () => {
    const args = qemuArgs(
      spec({
        hostNic: { mac: '52:54:00:aa:bb:cc', internet: true, outboundMac: '52:54:00:aa:bb:dd', services: [] },
      }),
    );
    const line = args.join(' ');
    assert.ok(args.includes('user,id=hostnet,restrict=on'), line);
    // The guest's NIC goes to the relay; slirp reaches the relay's other socket only through a hub.
    assert.match(args.find((arg) => arg.startsWith('stream,id=out,')) ?? '', /addr\.path=.*\/out\.sock$/);
    assert.ok(args.includes('virtio-net-pci,netdev=out,mac=52:54:00:aa:bb:dd,id=outnic'), line);
    assert.ok(
      args.includes('user,id=outslirp,net=10.0.3.0/24,host=10.0.3.2,dns=10.0.3.3,ipv6=off,restrict=off'),
      line,
    );
    assert.match(args.find((arg) => arg.startsWith('stream,id=outback,')) ?? '', /out-slirp\.sock$/);
    assert.ok(args.includes('hubport,id=outhub0,hubid=3000,netdev=outslirp'), line);
    assert.ok(args.includes('hubport,id=outhub1,hubid=3000,netdev=outback'), line);
    assert.ok(
      !args.some((arg) => /^virtio-net-pci,netdev=out(slirp|back)/.test(arg)),
      'slirp has no NIC of its own',
    );
  });

  test('firmware boot: each device in the boot order gets its bootindex (OVMF ignores -boot order)', () => {
    const firmware = { kernel: undefined, initrd: undefined, cmdline: undefined };
    const iso = qemuArgs(
      spec({ ...firmware, boot: { firmware: 'uefi', cdrom: '/m/a.iso', order: ['disk', 'cdrom'] } }),
    );
    assert.equal(iso.includes('-boot'), false);
    assert.deepEqual(valuesOf(iso, '-drive').slice(0, 3), [
      'file=/m/a.iso,media=cdrom,readonly=on,if=none,id=cdrom',
      'file=/run/vm/web/disk0.qcow2,if=none,format=qcow2,id=disk0',
      // Not booted: left as it was, after the devices that carry a bootindex.
      'file=/run/vm/web/disk1.qcow2,if=virtio,format=qcow2,id=disk1',
    ]);
    const devices = valuesOf(iso, '-device');
    assert.ok(devices.includes('ide-cd,drive=cdrom,bus=ide.0,unit=0,bootindex=2'), devices.join(' '));
    assert.ok(devices.includes('virtio-blk-pci,drive=disk0,bootindex=1'), devices.join(' '));
    // A user disk is the boot disk: the first of `disks` is then a plain disk.
    const disk = qemuArgs(
      spec({ ...firmware, boot: { firmware: 'bios', disk: '/s/boot.qcow2', order: ['disk'] } }),
    );
    assert.deepEqual(valuesOf(disk, '-drive').slice(0, 2), [
      'file=/s/boot.qcow2,if=none,format=qcow2,id=bootdisk',
      'file=/run/vm/web/disk0.qcow2,if=virtio,format=qcow2,id=disk0',
    ]);
    assert.ok(valuesOf(disk, '-device').includes('virtio-blk-pci,drive=bootdisk,bootindex=1'));
    // A direct kernel boot has no boot order.
    assert.equal(qemuArgs(base).join(' ').includes('bootindex'), false);
  });
});

describe('backendNamed', () => {
  test('QEMU by default, with the capabilities it declares; an unknown name is a ConfigError naming the known', () => {
    const qemu = backendNamed();
    assert.equal(qemu, backendNamed('qemu'));
    assert.equal(qemu.capabilities.cowFork, true);
    assert.deepEqual(qemu.capabilities.accels, ['kvm', 'tcg']);
    assert.throws(
      () => backendNamed('firecracker'),
      (error: Error) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, /unknown backend "firecracker" \(known: qemu, mock\)/);
        return true;
      },
    );
  });

  test('asking for what a backend lacks is a CapabilityError naming the backend and the capability', () => {
    const qemu = backendNamed('qemu');
    requireCapability(qemu, 'snapshot', 'full');
    assert.throws(
      () => requireCapability(qemu, 'snapshot', 'diff'),
      (error: Error) => {
        assert.ok(error instanceof CapabilityError, String(error));
        assert.match(error.message, /QEMU/);
        assert.match(error.message, /snapshot diff/);
        return true;
      },
    );
  });
});

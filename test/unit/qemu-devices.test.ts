import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { VmmSpec } from '../../src/backends/backend.js';
import { MACHINE_OUTBOUND } from '../../src/backends/outbound/launch.js';
import { qemuArgs } from '../../src/backends/qemu/args.js';
import { ConfigError } from '../../src/errors.js';
import { FLEET_OUTBOUND } from '../../src/fleet/vmm/outbound.js';
import { secretsDisk } from '../../src/fleet/vmm/secrets-disk.js';
import { METADATA_ADDRESS, metadataNic, outboundNic } from '../../src/fleet/vmm/vmm-options.js';

type Spec = Omit<VmmSpec, 'runtime' | 'startTimeoutMs'>;

/** A fleet instance's shape: one switch NIC, root and data disks, restored from a saved state. */
const base: Spec = {
  name: 'acme-web-i1',
  stateDir: '/f/vm/7',
  kernel: '/img/vmlinuz',
  memoryMiB: 256,
  cpus: 1,
  accel: 'tcg',
  nics: [{ socketPath: '/f/net/acme/sw.sock', mac: '52:54:00:00:00:01' }],
  memory: { path: '/dev/shm/i1.ram', share: true },
  disks: ['/f/vm/7/root.qcow2', '/f/vm/7/data.qcow2'],
  incoming: true,
};

const spec = (overrides: Partial<Spec>): Spec => ({ ...base, ...overrides });
/** What the spec's own fields add after the base's arguments. */
const added = (overrides: Partial<Spec>) => qemuArgs(spec(overrides)).slice(qemuArgs(base).length);

describe('qemuArgs: service NICs, read-only disks, the NIC out, the sandbox', () => {
  test('none of them: nothing added', () => {
    assert.deepEqual(added({ serviceNics: [], readOnlyDisks: [], sandbox: false }), []);
  });

  test('golden: all of them, after the disks and -incoming, in this order, before extraArgs', () => {
    const args = added({
      serviceNics: [
        {
          id: 'meta',
          mac: '52:54:00:00:00:02',
          subnet: '169.254.169.0/24',
          hostAddress: '169.254.169.1',
          endpoint: { address: '169.254.169.254', port: 80, command: ['/bin/sh', '-c', 'echo a,b', "it's"] },
        },
      ],
      readOnlyDisks: [{ id: 'secrets', path: '/f/vm/7/secrets.img', format: 'raw' }],
      outbound: { mac: '52:54:00:00:00:03', net: FLEET_OUTBOUND },
      sandbox: true,
      extraArgs: ['-d', 'guest_errors'],
    });
    assert.deepEqual(args, [
      '-netdev',
      // Each argument shell-quoted for libslirp, then commas doubled for QEMU's option parser.
      "user,id=meta,net=169.254.169.0/24,host=169.254.169.1,restrict=on,guestfwd=tcp:169.254.169.254:80-cmd:'/bin/sh' '-c' 'echo a,,b' 'it'\\''s'",
      '-device',
      'virtio-net-pci,netdev=meta,mac=52:54:00:00:00:02,id=metanic',
      '-drive',
      'file=/f/vm/7/secrets.img,if=virtio,format=raw,readonly=on,id=secrets',
      '-netdev',
      'stream,id=out,server=off,addr.type=unix,addr.path=/f/vm/7/out.sock',
      '-device',
      'virtio-net-pci,netdev=out,mac=52:54:00:00:00:03,id=outnic',
      '-netdev',
      'user,id=outslirp,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,ipv6=off,restrict=off',
      '-netdev',
      'stream,id=outback,server=off,addr.type=unix,addr.path=/f/vm/7/out-slirp.sock',
      '-netdev',
      'hubport,id=outhub0,hubid=3000,netdev=outslirp',
      '-netdev',
      'hubport,id=outhub1,hubid=3000,netdev=outback',
      '-sandbox',
      'on,obsolete=deny,resourcecontrol=deny',
      '-d',
      'guest_errors',
    ]);
    assert.equal(qemuArgs(spec({ sandbox: true })).at(-3), 'defer');
  });

  test('a service NIC without an endpoint reaches nothing: no guestfwd', () => {
    assert.deepEqual(
      added({
        serviceNics: [{ id: 'meta', mac: 'm', subnet: '169.254.169.0/24', hostAddress: '169.254.169.1' }],
      }),
      [
        '-netdev',
        'user,id=meta,net=169.254.169.0/24,host=169.254.169.1,restrict=on',
        '-device',
        'virtio-net-pci,netdev=meta,mac=m,id=metanic',
      ],
    );
  });

  test('service NICs and read-only disks keep their order; paths have commas doubled', () => {
    const args = added({
      serviceNics: [
        { id: 'a', mac: 'm1', subnet: '10.9.0.0/24', hostAddress: '10.9.0.1' },
        { id: 'b', mac: 'm2', subnet: '10.8.0.0/24', hostAddress: '10.8.0.1' },
      ],
      readOnlyDisks: [
        { id: 'one', path: '/x/a,b.img', format: 'raw' },
        { id: 'two', path: '/x/c.qcow2', format: 'qcow2' },
      ],
    });
    assert.deepEqual(
      args.filter((_, i) => i % 2 === 1),
      [
        'user,id=a,net=10.9.0.0/24,host=10.9.0.1,restrict=on',
        'virtio-net-pci,netdev=a,mac=m1,id=anic',
        'user,id=b,net=10.8.0.0/24,host=10.8.0.1,restrict=on',
        'virtio-net-pci,netdev=b,mac=m2,id=bnic',
        'file=/x/a,,b.img,if=virtio,format=raw,readonly=on,id=one',
        'file=/x/c.qcow2,if=virtio,format=qcow2,readonly=on,id=two',
      ],
    );
  });

  test('a NIC out and a host NIC with internet access are refused together', () => {
    assert.throws(
      () =>
        qemuArgs(
          spec({
            hostNic: { mac: 'h', internet: true, services: [] },
            outbound: { mac: 'o', net: MACHINE_OUTBOUND },
          }),
        ),
      ConfigError,
    );
  });
});

describe("the fleet's devices as spec fields", () => {
  test("a pool base's metadata NIC reaches nothing; an instance's runs the metadata host in a slot", () => {
    const baseNic = metadataNic('fleet/acme/web/base');
    assert.deepEqual(Object.keys(baseNic).sort(), ['hostAddress', 'id', 'mac', 'subnet']);
    const nic = metadataNic('fleet/acme/web/i1', '/f/vm/7');
    assert.equal(nic.id, 'meta');
    assert.notEqual(nic.mac, baseNic.mac);
    assert.deepEqual(
      { address: nic.endpoint?.address, port: nic.endpoint?.port },
      { address: METADATA_ADDRESS, port: 80 },
    );
    const command = nic.endpoint?.command ?? [];
    assert.deepEqual(command.slice(0, 2), ['/bin/sh', '-c']);
    assert.deepEqual(command.slice(3, 5), ['metadata-host', '/f/vm/7']);
    assert.match(command.at(-2) ?? '', /metadata-host\.[jt]s$/);
    assert.equal(command.at(-1), '/f/vm/7');
  });

  test('the secrets disk is raw; the NIC out is in the fleet subnet', () => {
    assert.deepEqual(secretsDisk('/f/vm/7'), { id: 'secrets', path: '/f/vm/7/secrets.img', format: 'raw' });
    assert.equal(outboundNic('acme-web-i1').net, FLEET_OUTBOUND);
  });
});

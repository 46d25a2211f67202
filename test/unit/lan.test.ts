import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MachineDeclaration } from '../../src/driver/definition.js';
import { attachments, planLan } from '../../src/driver/lan.js';
import type { VirtualSwitch } from '../../src/network/switch.js';

/** attachments() only looks switches up in the map, so a named object stands in for one. */
const fakeSwitch = (vlan: number) => ({ name: `vlan${vlan}` }) as unknown as VirtualSwitch;

const switchesFor = (vlans: number[]) => new Map(vlans.map((vlan) => [vlan, fakeSwitch(vlan)]));

describe('planLan', () => {
  test('machines without vlans are on VLAN 1, numbered by declaration order', () => {
    const plan = planLan({ server: {}, client: {}, third: {} });
    assert.deepEqual(plan, {
      vlans: [1],
      vlansOf: { server: [1], client: [1], third: [1] },
      hosts: { server: '192.168.1.1', client: '192.168.1.2', third: '192.168.1.3' },
    });
  });

  test('golden: several VLANs; hosts use each machine’s first VLAN; vlans [] gets no hosts entry', () => {
    const machines: Record<string, MachineDeclaration> = {
      router: { vlans: [1, 2] },
      inside: { vlans: [2] },
      outside: {},
      offline: { vlans: [] },
      dual: { vlans: [3, 1] },
    };
    assert.deepEqual(planLan(machines), {
      vlans: [1, 2, 3],
      vlansOf: { router: [1, 2], inside: [2], outside: [1], offline: [], dual: [3, 1] },
      hosts: {
        router: '192.168.1.1',
        inside: '192.168.2.2',
        outside: '192.168.1.3',
        dual: '192.168.3.5',
      },
    });
  });

  test('an offline machine still takes its number: the next machine is .3, not .2', () => {
    const plan = planLan({ a: {}, b: { vlans: [] }, c: {} });
    assert.deepEqual(plan.hosts, { a: '192.168.1.1', c: '192.168.1.3' });
    assert.equal('b' in plan.hosts, false);
    assert.deepEqual(plan.vlansOf.b, []);
  });

  test('vlans lists each VLAN once, in order of first appearance', () => {
    const plan = planLan({ a: { vlans: [5, 7] }, b: { vlans: [7, 5, 9] }, c: { vlans: [5] } });
    assert.deepEqual(plan.vlans, [5, 7, 9]);
  });

  test('no machines: an empty plan', () => {
    assert.deepEqual(planLan({}), { vlans: [], vlansOf: {}, hosts: {} });
  });
});

describe('attachments', () => {
  const machines: Record<string, MachineDeclaration> = {
    router: { vlans: [1, 2] },
    inside: { vlans: [2] },
    offline: { vlans: [] },
    outside: {},
  };
  const plan = planLan(machines);
  const names = Object.keys(machines);
  const switches = switchesFor(plan.vlans);

  test('one NIC per VLAN, in the machine’s VLAN order, with 192.168.<vlan>.<i+1>/24', () => {
    const nics = attachments(plan, names, 'router', switches, true);
    assert.deepEqual(
      nics.map((nic) => ({ switch: nic.switch.name, address: nic.address })),
      [
        { switch: 'vlan1', address: '192.168.1.1/24' },
        { switch: 'vlan2', address: '192.168.2.1/24' },
      ],
    );
    assert.equal(nics[0]?.switch, switches.get(1), 'the very switch object from the map');
    assert.equal(nics[1]?.switch, switches.get(2));
  });

  test('the address uses the machine’s index among all names', () => {
    assert.deepEqual(
      attachments(plan, names, 'inside', switches, true).map((nic) => nic.address),
      ['192.168.2.2/24'],
    );
    assert.deepEqual(
      attachments(plan, names, 'outside', switches, true).map((nic) => nic.address),
      ['192.168.1.4/24'],
    );
  });

  test('withAddresses false: the same NICs, with no address key at all', () => {
    const nics = attachments(plan, names, 'router', switches, false);
    assert.equal(nics.length, 2);
    for (const nic of nics) assert.deepEqual(Object.keys(nic), ['switch']);
    assert.deepEqual(
      nics.map((nic) => nic.switch.name),
      ['vlan1', 'vlan2'],
    );
  });

  test('a machine on no VLAN gets no NICs', () => {
    assert.deepEqual(attachments(plan, names, 'offline', switches, true), []);
  });

  test('an unknown machine name gets no NICs', () => {
    assert.deepEqual(attachments(plan, names, 'nobody', switches, true), []);
  });

  test('attachments agree with the hosts map on each machine’s first VLAN', () => {
    for (const name of names) {
      const first = attachments(plan, names, name, switches, true)[0];
      if (plan.hosts[name] === undefined) assert.equal(first, undefined);
      else assert.equal(first?.address, `${plan.hosts[name]}/24`);
    }
  });
});

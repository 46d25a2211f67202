import type { NetworkAttachment } from '../machine/options.js';
import type { VirtualSwitch } from '../network/switch.js';
import type { MachineDeclaration } from './definition.js';

/** Who is on which VLAN with which address: machine i is 192.168.<vlan>.<i+1>/24. */
export interface LanPlan {
  vlans: number[];
  vlansOf: Record<string, number[]>;
  /** /etc/hosts for every machine: each name at its address on its first VLAN. */
  hosts: Record<string, string>;
}

export function planLan(machines: Record<string, MachineDeclaration>): LanPlan {
  const names = Object.keys(machines);
  const vlansOf: Record<string, number[]> = {};
  const hosts: Record<string, string> = {};
  names.forEach((name, index) => {
    const vlans = machines[name]?.vlans ?? [1];
    vlansOf[name] = vlans;
    if (vlans[0] !== undefined) hosts[name] = `192.168.${vlans[0]}.${index + 1}`;
  });
  return { vlans: [...new Set(Object.values(vlansOf).flat())], vlansOf, hosts };
}

/** A machine's NICs on the given switches, with addresses unless the guest already has them. */
export function attachments(
  plan: LanPlan,
  names: string[],
  name: string,
  switches: Map<number, VirtualSwitch>,
  withAddresses: boolean,
): NetworkAttachment[] {
  const index = names.indexOf(name);
  return (plan.vlansOf[name] ?? []).map((vlan) => ({
    switch: switches.get(vlan) as VirtualSwitch,
    ...(withAddresses ? { address: `192.168.${vlan}.${index + 1}/24` } : {}),
  }));
}

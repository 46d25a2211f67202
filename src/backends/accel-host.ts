import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { runAccelProbe } from './qemu/accel-probe.js';

/** What decides whether KVM works here, gathered by a KvmHost (accel-host.ts) or given by a test. */
export interface KvmFacts {
  /** /dev/kvm: absent, present but not readable and writable by this process, or usable. */
  device: 'missing' | 'denied' | 'ok';
  /** Its owner group's name and mode bits, when present ("root", 0o600). */
  deviceGroup?: string;
  deviceMode?: number;
  /** The user running vmkit, and whether /etc/group lists it in deviceGroup (a new login may be due). */
  user: string;
  listedInDeviceGroup?: boolean;
  /** The CPU flags from /proc/cpuinfo. */
  cpuFlags: ReadonlySet<string>;
  /** Loaded kernel modules of interest (kvm, kvm_intel, kvm_amd, kvm_pvm). */
  modules: ReadonlySet<string>;
}

/** The result of running a tiny guest under KVM: bounded, so a hang is a failure, not a wait. */
export interface KvmProbeResult {
  ok: boolean;
  detail: string;
}

/** Where accelerator detection gets its inputs; tests hand in their own. */
export interface KvmHost {
  facts(): Promise<KvmFacts>;
  /** Runs a tiny guest under KVM; only called when the facts allow KVM. */
  probe(): Promise<KvmProbeResult>;
}

const KVM_MODULES = ['kvm', 'kvm_intel', 'kvm_amd', 'kvm_pvm'];

/** The flags of the first processor in /proc/cpuinfo. */
export function parseCpuFlags(cpuinfo: string): Set<string> {
  return new Set(
    cpuinfo
      .match(/^flags\s*:(.*)$/m)?.[1]
      ?.trim()
      .split(/\s+/)
      .filter(Boolean) ?? [],
  );
}

/** An /etc/group entry by gid: its name and the users it lists. */
export function groupEntry(etcGroup: string, gid: number): { name: string; members: string[] } | undefined {
  for (const line of etcGroup.split('\n')) {
    const [name, , id, members] = line.split(':');
    if (name && Number(id) === gid) return { name, members: (members ?? '').split(',').filter(Boolean) };
  }
  return undefined;
}

export function currentUser(): string {
  try {
    return userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`; // a uid without a passwd entry (containers)
  }
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

/** Reads the KVM facts of this machine. */
export async function readKvmFacts(): Promise<KvmFacts> {
  const user = currentUser();
  const cpuFlags = parseCpuFlags(await readFile('/proc/cpuinfo', 'utf8').catch(() => ''));
  const loaded = await Promise.all(KVM_MODULES.map((name) => exists(`/sys/module/${name}`)));
  const modules = new Set(KVM_MODULES.filter((_, index) => loaded[index]));
  const device = await stat('/dev/kvm').catch(() => undefined);
  if (!device) return { device: 'missing', user, cpuFlags, modules };
  const usable = await access('/dev/kvm', constants.R_OK | constants.W_OK).then(
    () => true,
    () => false,
  );
  const group = groupEntry(await readFile('/etc/group', 'utf8').catch(() => ''), device.gid);
  return {
    device: usable ? 'ok' : 'denied',
    deviceGroup: group?.name ?? `gid ${device.gid}`,
    deviceMode: device.mode & 0o7777,
    user,
    listedInDeviceGroup: group?.members.includes(user) ?? false,
    cpuFlags,
    modules,
  };
}

/** This machine, as accelerator detection sees it. */
export function systemKvmHost(): KvmHost {
  return { facts: readKvmFacts, probe: () => runAccelProbe() };
}

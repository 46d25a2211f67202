import { ConfigError } from '../errors.js';
import type { Runtime } from '../runtime/runtime.js';
import { type KvmFacts, type KvmHost, type KvmProbeResult, systemKvmHost } from './accel-host.js';
import type { Accel } from './backend.js';

export type { KvmFacts, KvmProbeResult } from './accel-host.js';
export type { Accel } from './backend.js';

export type AccelRequest = 'auto' | 'kvm' | 'tcg';

export interface AccelDecision {
  accel: Accel;
  reason: string;
}

export type KvmBranch =
  | 'no-device'
  | 'nested-pvm'
  | 'no-hardware-virt'
  | 'no-permission'
  | 'probe-failed'
  | 'usable';

export interface KvmVerdict {
  usable: boolean;
  branch: KvmBranch;
  /** One sentence a person reads in `vmkit doctor` and in the boot log: what was found. */
  reason: string;
  /** One line that fixes it, where there is one. */
  fix?: string;
}

const hardwareFlag = (flags: ReadonlySet<string>) =>
  flags.has('vmx') ? 'vmx' : flags.has('svm') ? 'svm' : undefined;

const NESTED_FIX =
  'for KVM, use a machine or cloud instance type that exposes vmx/svm (nested virtualisation)';

/**
 * Whether KVM can run ordinary guests, from facts alone, before any probe: the verdict, or
 * undefined when only running a guest can tell. /dev/kvm existing is not enough: a nested PVM
 * host exposes it without hardware virtualisation, and stock kernels hang under it.
 */
export function judgeKvmFacts(facts: KvmFacts): KvmVerdict | undefined {
  const flag = hardwareFlag(facts.cpuFlags);
  if (facts.device === 'missing') {
    return {
      usable: false,
      branch: 'no-device',
      reason: flag
        ? `/dev/kvm does not exist, though the CPU has ${flag}`
        : '/dev/kvm does not exist and the CPU shows no vmx/svm flag',
      fix: flag
        ? `sudo modprobe ${flag === 'vmx' ? 'kvm_intel' : 'kvm_amd'}; in a container, pass --device /dev/kvm`
        : 'enable VT-x/AMD-V in the firmware, or use a machine or cloud instance type with nested virtualisation',
    };
  }
  if (facts.modules.has('kvm_pvm')) {
    return {
      usable: false,
      branch: 'nested-pvm',
      reason: `/dev/kvm is a nested PVM hypervisor (kvm_pvm module loaded${flag ? '' : ', no vmx/svm CPU flag'}): stock guest kernels hang under it`,
      fix: NESTED_FIX,
    };
  }
  if (!flag) {
    return {
      usable: false,
      branch: 'no-hardware-virt',
      reason:
        '/dev/kvm exists but the CPU shows no vmx/svm flag (paravirtual or nested KVM without hardware virtualisation)',
      fix: NESTED_FIX,
    };
  }
  if (facts.device === 'denied') return denied(facts);
  return undefined;
}

function denied(facts: KvmFacts): KvmVerdict {
  const mode =
    facts.deviceMode === undefined ? '' : ` mode ${(facts.deviceMode & 0o777).toString(8).padStart(4, '0')}`;
  const group = facts.deviceGroup ?? 'unknown';
  const reason = `/dev/kvm (group ${group}${mode}) is not readable and writable by user ${facts.user}`;
  const groupCanUse =
    facts.deviceMode !== undefined && (facts.deviceMode & 0o060) === 0o060 && group !== 'root';
  let fix: string;
  if (groupCanUse && facts.listedInDeviceGroup) {
    fix = `${facts.user} is in group ${group} but this session is not: log out and in again (or run newgrp ${group})`;
  } else if (groupCanUse) {
    fix = `sudo usermod -aG ${group} ${facts.user}, then log out and in again`;
  } else {
    fix = `give /dev/kvm to group kvm with a udev rule (KERNEL=="kvm", GROUP="kvm", MODE="0660" in /etc/udev/rules.d/99-kvm.rules; sudo udevadm trigger --name-match=kvm), then sudo usermod -aG kvm ${facts.user} (see docs/ci.md)`;
  }
  return { usable: false, branch: 'no-permission', reason, fix };
}

/** The verdict once a probe has run (only asked for when the facts allow KVM). */
export function judgeKvmProbe(facts: KvmFacts, probe: KvmProbeResult): KvmVerdict {
  const flag = hardwareFlag(facts.cpuFlags) ?? 'vmx/svm';
  if (!probe.ok) {
    return {
      usable: false,
      branch: 'probe-failed',
      reason: `/dev/kvm is usable and the CPU has ${flag}, but QEMU could not run a test guest under KVM: ${probe.detail}`,
      fix: 'look at dmesg for kvm errors; set VMKIT_ACCEL=tcg to skip the probe',
    };
  }
  return {
    usable: true,
    branch: 'usable',
    reason: `KVM works: /dev/kvm is usable, the CPU has ${flag}, and ${probe.detail}`,
  };
}

/** Works out whether KVM is usable, from the host's facts and, where they allow it, a probe. */
export async function probeKvm(host: KvmHost = systemKvmHost()): Promise<KvmVerdict> {
  const facts = await host.facts();
  return judgeKvmFacts(facts) ?? judgeKvmProbe(facts, await host.probe());
}

/** How a verdict reads in one line: what was found, and the fix. */
export function describeVerdict(verdict: KvmVerdict): string {
  return verdict.fix ? `${verdict.reason}; fix: ${verdict.fix}` : verdict.reason;
}

export interface ChooseAccelDeps {
  host?: KvmHost;
  /** Where VMKIT_ACCEL is read from. */
  env?: NodeJS.ProcessEnv;
}

/**
 * Picks the accelerator for a request: `auto` takes KVM only where it really works. VMKIT_ACCEL
 * (kvm or tcg) replaces `auto`, so a CI job can insist on KVM; an explicit kvm or tcg wins over it.
 */
export async function chooseAccel(
  request: AccelRequest = 'auto',
  runtime: Runtime,
  deps: ChooseAccelDeps = {},
): Promise<AccelDecision> {
  parseAccel(request);
  const fromEnv = request === 'auto' ? (deps.env ?? process.env).VMKIT_ACCEL : undefined;
  const wanted = fromEnv ? parseAccel(fromEnv, 'VMKIT_ACCEL') : request;
  const source = fromEnv ? `VMKIT_ACCEL=${fromEnv}` : `accel "${wanted}"`;
  if (wanted === 'tcg') return { accel: 'tcg', reason: `${source} asks for TCG (software emulation)` };
  const kvm = await runtime.fact('kvm-probe', () => probeKvm(deps.host));
  if (wanted === 'kvm') {
    if (!kvm.usable)
      throw new ConfigError(`${source} asks for KVM, but it cannot be used: ${describeVerdict(kvm)}`);
    return { accel: 'kvm', reason: `${source}; ${kvm.reason}` };
  }
  return kvm.usable
    ? { accel: 'kvm', reason: kvm.reason }
    : { accel: 'tcg', reason: `software emulation, slower than KVM: ${describeVerdict(kvm)}` };
}

export function parseAccel(value: unknown, what = 'accel'): AccelRequest {
  if (value === 'auto' || value === 'kvm' || value === 'tcg') return value;
  throw new ConfigError(`unknown ${what} ${JSON.stringify(value)} (use auto, kvm or tcg)`);
}

import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { ConfigError } from '../errors.js';
import { defaultRuntime, type Runtime } from '../runtime/runtime.js';

export type AccelRequest = 'auto' | 'kvm' | 'tcg';
export type Accel = 'kvm' | 'tcg';

export interface AccelDecision {
  accel: Accel;
  reason: string;
}

/**
 * Whether KVM can run ordinary guests here. /dev/kvm existing is not enough: a nested PVM host
 * exposes it without hardware virtualisation, and stock kernels hang under it.
 */
export async function probeKvm(): Promise<{ usable: boolean; reason: string }> {
  try {
    await stat('/dev/kvm');
  } catch {
    return { usable: false, reason: '/dev/kvm does not exist' };
  }
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return {
      usable: false,
      reason: '/dev/kvm is not readable and writable by this user (add it to the kvm group)',
    };
  }
  const pvm = await stat('/sys/module/kvm_pvm').then(
    () => true,
    () => false,
  );
  if (pvm)
    return {
      usable: false,
      reason: '/dev/kvm is a nested PVM host (kvm_pvm), which cannot run stock guest kernels',
    };
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const flags = new Set(
    cpuinfo
      .match(/^flags\s*:(.*)$/m)?.[1]
      ?.trim()
      .split(/\s+/) ?? [],
  );
  if (!flags.has('vmx') && !flags.has('svm')) {
    return {
      usable: false,
      reason: '/dev/kvm exists but the CPU has no vmx/svm flag (nested or paravirtual KVM)',
    };
  }
  return { usable: true, reason: `/dev/kvm is usable and the CPU has ${flags.has('vmx') ? 'vmx' : 'svm'}` };
}

/** Picks the accelerator for a request: `auto` takes KVM only where it really works. */
export async function chooseAccel(
  request: AccelRequest = 'auto',
  runtime: Runtime = defaultRuntime(),
): Promise<AccelDecision> {
  parseAccel(request);
  if (request === 'tcg') return { accel: 'tcg', reason: 'TCG was requested' };
  const kvm = await runtime.fact('kvm-probe', probeKvm);
  if (request === 'kvm') {
    if (!kvm.usable) throw new ConfigError(`accel "kvm" was requested but KVM cannot be used: ${kvm.reason}`);
    return { accel: 'kvm', reason: `KVM was requested; ${kvm.reason}` };
  }
  return kvm.usable
    ? { accel: 'kvm', reason: kvm.reason }
    : { accel: 'tcg', reason: `using TCG (software emulation): ${kvm.reason}` };
}

export function parseAccel(value: unknown): AccelRequest {
  if (value === 'auto' || value === 'kvm' || value === 'tcg') return value;
  throw new ConfigError(`unknown accel ${JSON.stringify(value)} (use auto, kvm or tcg)`);
}

import type { AccelDecision, KvmVerdict } from '../../backends/accel.js';
import type { Check } from '../../images/rootless-checks.js';

export {
  type Check,
  checkSubids,
  checkUserns,
  parseSubids,
  type Status,
  SUBID_COUNT,
  type SubidFacts,
  type UsernsFacts,
  type Who,
} from '../../images/rootless-checks.js';

/**
 * The host checks of `vmkit doctor`, as pure functions over facts that doctor-facts.ts gathers
 * (or a test hands in). `fail` means machines cannot boot; `warn` means a feature is off or slow.
 */

export function checkAccel(decision: AccelDecision | Error, verdict: KvmVerdict | undefined): Check {
  if (decision instanceof Error) return { status: 'fail', what: 'accelerator', detail: decision.message };
  const status = decision.accel === 'kvm' ? 'ok' : 'warn';
  // `auto` explains itself by the verdict; a forced choice (VMKIT_ACCEL=tcg) says so, then what KVM would do.
  const fromVerdict = verdict !== undefined && decision.reason.includes(verdict.reason);
  const why =
    fromVerdict || !verdict ? (verdict?.reason ?? decision.reason) : `${decision.reason}; ${verdict.reason}`;
  const check: Check = { status, what: 'accelerator', detail: `${decision.accel}: ${why}` };
  if (decision.accel === 'tcg' && fromVerdict && verdict?.fix) check.fix = verdict.fix;
  return check;
}

/** A host tool vmkit runs, and where it was found (vmkit also looks outside PATH, in the sbin folders). */
export interface ToolNeed {
  name: string;
  /** The Debian package that has it. */
  package: string;
  purpose: string;
  /** Machines cannot boot or images cannot be built without it. */
  required: boolean;
}

export interface ToolFound {
  path?: string;
  onPath: boolean;
}

export function checkTool(need: ToolNeed, found: ToolFound): Check {
  if (!found.path) {
    return {
      status: need.required ? 'fail' : 'warn',
      what: need.name,
      detail: `not found: ${need.purpose}`,
      fix: `sudo apt-get install ${need.package}`,
    };
  }
  const where = found.onPath ? found.path : `${found.path} (not on this user's PATH)`;
  return { status: 'ok', what: need.name, detail: `${where}: ${need.purpose}` };
}

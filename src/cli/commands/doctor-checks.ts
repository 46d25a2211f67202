import type { AccelDecision, KvmVerdict } from '../../backends/accel.js';

/**
 * The host checks of `vmkit doctor`, as pure functions over facts that doctor-facts.ts gathers
 * (or a test hands in). `fail` means machines cannot boot; `warn` means a feature is off or slow.
 */
export type Status = 'ok' | 'warn' | 'fail';

export interface Check {
  status: Status;
  what: string;
  detail: string;
  /** One line that fixes it. */
  fix?: string;
}

export interface Who {
  user: string;
  uid: number;
}

const isRoot = (who: Who) => who.uid === 0;

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

export interface UsernsFacts {
  /** The sysctls as read, undefined where this kernel has no such sysctl. */
  unprivilegedClone?: string;
  maxUserNamespaces?: number;
  apparmorRestrict?: string;
  /** `unshare --user --map-root-user true`, bounded. */
  probe: { ok: boolean; detail: string };
}

const USERNS_NEED = 'rootless Debian image builds (mmdebstrap --mode=unshare) need them';

export function checkUserns(facts: UsernsFacts): Check {
  const what = 'user namespaces';
  if (facts.probe.ok) return { status: 'ok', what, detail: 'unshare --user --map-root-user works' };
  const failed = `unshare --user --map-root-user failed (${facts.probe.detail}); ${USERNS_NEED}`;
  if (facts.unprivilegedClone === '0') {
    return {
      status: 'warn',
      what,
      detail: `kernel.unprivileged_userns_clone is 0: ${failed}`,
      fix: 'sudo sysctl -w kernel.unprivileged_userns_clone=1 (and the same line in /etc/sysctl.d/ to keep it)',
    };
  }
  if (facts.maxUserNamespaces === 0) {
    return {
      status: 'warn',
      what,
      detail: `user.max_user_namespaces is 0: ${failed}`,
      fix: 'sudo sysctl -w user.max_user_namespaces=10000 (and the same line in /etc/sysctl.d/ to keep it)',
    };
  }
  if (facts.apparmorRestrict === '1') {
    return {
      status: 'warn',
      what,
      detail: `AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1): ${failed}`,
      fix: 'an AppArmor profile with "userns," for mmdebstrap (see docs/ci.md), or sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0',
    };
  }
  return { status: 'warn', what, detail: failed };
}

export interface SubidFacts extends Who {
  /** The text of /etc/subuid and /etc/subgid, undefined where missing or unreadable. */
  subuid?: string;
  subgid?: string;
  /** Where newuidmap and newgidmap were found. */
  newuidmap?: string;
  newgidmap?: string;
}

/** A Debian tree has ids up to 65534 (nobody): the range must cover 0..65535 inside. */
export const SUBID_COUNT = 65536;

interface Range {
  owner: string;
  start: number;
  count: number;
}

export function parseSubids(text: string): Range[] {
  return text
    .split('\n')
    .map((line) => line.trim().split(':'))
    .filter((fields) => fields.length === 3 && /^\d+$/.test(fields[1] ?? '') && /^\d+$/.test(fields[2] ?? ''))
    .map(([owner, start, count]) => ({ owner: owner as string, start: Number(start), count: Number(count) }));
}

/** The first id after every range in the files (at least 100000): where a new range can go. */
function freeStart(...texts: (string | undefined)[]): number {
  const ends = texts.flatMap((text) => parseSubids(text ?? '').map((range) => range.start + range.count));
  return Math.max(100_000, ...ends);
}

export function checkSubids(facts: SubidFacts): Check {
  const what = 'subordinate ids';
  if (isRoot(facts))
    return { status: 'ok', what, detail: 'not needed as root (mmdebstrap runs in root mode)' };
  const tools = ['newuidmap', 'newgidmap'].filter((tool) => !facts[tool as 'newuidmap' | 'newgidmap']);
  const problems: string[] = [];
  let needRanges = false;
  for (const [file, text] of [
    ['/etc/subuid', facts.subuid],
    ['/etc/subgid', facts.subgid],
  ] as const) {
    if (text === undefined) {
      problems.push(`${file} is missing or unreadable`);
      needRanges = true;
      continue;
    }
    const mine = parseSubids(text).filter(
      (range) => range.owner === facts.user || range.owner === String(facts.uid),
    );
    const byName = mine.find((range) => range.owner === facts.user);
    if (mine.length === 0) {
      problems.push(`${file} has no range for ${facts.user}`);
      needRanges = true;
    } else if (!byName) {
      problems.push(`${file} lists ${facts.user} by uid only (mmdebstrap looks for the name)`);
      needRanges = true;
    } else if (byName.count < SUBID_COUNT) {
      problems.push(`${file} gives ${facts.user} ${byName.count} ids, fewer than ${SUBID_COUNT}`);
      needRanges = true;
    }
  }
  if (tools.length) problems.push(`${tools.join(' and ')} not found`);
  if (problems.length === 0) {
    return {
      status: 'ok',
      what,
      detail: `${facts.user} has ${SUBID_COUNT}+ ids in /etc/subuid and /etc/subgid; newuidmap and newgidmap found`,
    };
  }
  const fixes: string[] = [];
  if (tools.length) fixes.push('sudo apt-get install uidmap');
  if (needRanges) {
    const start = freeStart(facts.subuid, facts.subgid);
    const range = `${start}-${start + SUBID_COUNT - 1}`;
    fixes.push(`sudo usermod --add-subuids ${range} --add-subgids ${range} ${facts.user}`);
  }
  return { status: 'warn', what, detail: `${problems.join('; ')}: ${USERNS_NEED}`, fix: fixes.join(' && ') };
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

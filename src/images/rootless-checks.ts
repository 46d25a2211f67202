import { readFile } from 'node:fs/promises';
import { runTool } from '../util/exec.js';
import { which } from '../util/which.js';

/**
 * Whether this account can build a Debian root filesystem without root: unprivileged user
 * namespaces, and subordinate ids for mmdebstrap's unshare mode. Pure checks over facts (for
 * `vmkit doctor` and its tests) and the thin layer that reads them from this host.
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

/** Finds a tool by name: its path, or undefined. */
export type FindTool = (name: string) => Promise<string | undefined>;

const readText = (path: string) => readFile(path, 'utf8').catch(() => undefined);
const sysctl = async (name: string) => (await readText(`/proc/sys/${name}`))?.trim();

export async function readUsernsFacts(find: FindTool = which): Promise<UsernsFacts> {
  const max = await sysctl('user/max_user_namespaces');
  const facts: UsernsFacts = { probe: await probeUserns(find) };
  const clone = await sysctl('kernel/unprivileged_userns_clone');
  const apparmor = await sysctl('kernel/apparmor_restrict_unprivileged_userns');
  if (clone !== undefined) facts.unprivilegedClone = clone;
  if (max !== undefined) facts.maxUserNamespaces = Number(max);
  if (apparmor !== undefined) facts.apparmorRestrict = apparmor;
  return facts;
}

/** A real try: `unshare --user --map-root-user true`, bounded so a stuck helper cannot stall us. */
async function probeUserns(find: FindTool): Promise<UsernsFacts['probe']> {
  const unshare = await find('unshare');
  if (!unshare) return { ok: false, detail: 'unshare not found (apt-get install util-linux)' };
  return runTool(unshare, ['--user', '--map-root-user', 'true'], { timeoutMs: 5_000 }).then(
    () => ({ ok: true, detail: '' }),
    (error: Error) => ({ ok: false, detail: error.message.replace(/\s+/g, ' ').trim() }),
  );
}

export async function readSubidFacts(who: Who, find: FindTool = which): Promise<SubidFacts> {
  const facts: SubidFacts = { ...who };
  const [subuid, subgid, newuidmap, newgidmap] = await Promise.all([
    readText('/etc/subuid'),
    readText('/etc/subgid'),
    find('newuidmap'),
    find('newgidmap'),
  ]);
  if (subuid !== undefined) facts.subuid = subuid;
  if (subgid !== undefined) facts.subgid = subgid;
  if (newuidmap) facts.newuidmap = newuidmap;
  if (newgidmap) facts.newgidmap = newgidmap;
  return facts;
}

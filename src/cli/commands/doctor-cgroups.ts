import type { Check, Who } from './doctor-checks.js';

/** The controllers the fleet's resource limits use (src/fleet/cgroups.ts). */
export const NEEDED_CONTROLLERS = ['memory', 'cpu', 'pids'] as const;

export interface CgroupGroup {
  /** Its path under the cgroup v2 root ("/user.slice/user-1000.slice/user@1000.service"). */
  path: string;
  /** Its cgroup.controllers: what it may enable for groups made under it. */
  controllers: string[];
  /** Whether this user can make groups in it. */
  writable: boolean;
}

export interface CgroupFacts extends Who {
  /** v2: one unified hierarchy with the controllers; v1: a hierarchy per controller (hybrid too). */
  version: 'v2' | 'v1' | 'none';
  /** v2: the group this process runs in, where the fleet makes its VMMs' groups. */
  own?: CgroupGroup;
  /** v2: the user's systemd manager group user@UID.service, where it exists. */
  userService?: CgroupGroup;
  /** v1: whether this process can make groups under its own group in each needed hierarchy. */
  v1Writable?: Partial<Record<(typeof NEEDED_CONTROLLERS)[number], boolean>>;
}

const PURPOSE = 'the fleet limits memory, CPU and pids per VMM with them';
const DROP_IN =
  "sudo mkdir -p /etc/systemd/system/user@.service.d && printf '[Service]\\nDelegate=cpu cpuset io memory pids\\n' | sudo tee /etc/systemd/system/user@.service.d/delegate.conf && sudo systemctl daemon-reload, then log in again";
const SCOPE = 'run vmkit under systemd-run --user --scope -p Delegate=yes';

const missing = (group: CgroupGroup) =>
  NEEDED_CONTROLLERS.filter((name) => !group.controllers.includes(name));

const inside = (path: string, parent: string) => path === parent || path.startsWith(`${parent}/`);

export function checkCgroups(facts: CgroupFacts): Check {
  const what = 'cgroups';
  if (facts.version === 'none') {
    return { status: 'warn', what, detail: `no cgroup hierarchy found at /sys/fs/cgroup: ${PURPOSE}` };
  }
  if (facts.version === 'v1') return checkV1(facts);
  const own = facts.own;
  if (own?.writable && missing(own).length === 0) {
    return {
      status: 'ok',
      what,
      detail: `v2; ${own.path} is writable by ${facts.user} and offers ${NEEDED_CONTROLLERS.join(', ')}`,
    };
  }
  if (facts.uid === 0) {
    const lacking = own ? missing(own) : [...NEEDED_CONTROLLERS];
    return {
      status: 'warn',
      what,
      detail: `v2; ${own?.path ?? 'this process group'} ${own?.writable ? `does not offer ${lacking.join(', ')}` : 'is not writable'}: ${PURPOSE}`,
    };
  }
  const service = facts.userService;
  if (!service) {
    return {
      status: 'warn',
      what,
      detail: `v2, but ${facts.user} has no user@${facts.uid}.service group (no systemd user manager; su, runuser and sudo start none): ${PURPOSE}`,
      fix: `sudo loginctl enable-linger ${facts.user}, then ${SCOPE}`,
    };
  }
  const lacking = missing(service);
  if (!service.writable || lacking.length > 0) {
    const why = service.writable ? `delegates no ${lacking.join(', ')}` : `is not writable by ${facts.user}`;
    return { status: 'warn', what, detail: `v2; ${service.path} ${why}: ${PURPOSE}`, fix: DROP_IN };
  }
  const where = own ? own.path : 'a group it cannot read';
  return {
    status: 'warn',
    what,
    detail: `v2; ${service.path} is delegated, but vmkit runs in ${where}${own && inside(own.path, service.path) ? ', which it cannot use' : ', outside it'}: ${PURPOSE}`,
    fix: SCOPE,
  };
}

function checkV1(facts: CgroupFacts): Check {
  const what = 'cgroups';
  const denied = NEEDED_CONTROLLERS.filter((name) => !facts.v1Writable?.[name]);
  if (denied.length === 0) {
    return {
      status: 'ok',
      what,
      detail: `v1; ${facts.user} can make ${NEEDED_CONTROLLERS.join(', ')} groups`,
    };
  }
  return {
    status: 'warn',
    what,
    detail: `v1; ${facts.user} cannot make groups in the ${denied.join(', ')} hierarchies (cgroup v1 has no safe delegation to users): ${PURPOSE}`,
    fix:
      facts.uid === 0
        ? 'mount the cgroup v1 controllers writable, or boot with systemd.unified_cgroup_hierarchy=1'
        : 'run the fleet as root, or boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2) and delegate to the user',
  };
}

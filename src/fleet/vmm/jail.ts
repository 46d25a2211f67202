import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  lstatSync,
  readdirSync,
  realpathSync,
  rmSync,
  statSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import type { Runtime } from '../../runtime/runtime.js';
import { ensureDirSync } from '../../util/files.js';
import { shellQuote } from '../../util/shell.js';
import { whichSync } from '../../util/which.js';

/**
 * The VMM's jail, when vmkit runs as root: QEMU starts in a mount namespace of its own
 * (util-linux `unshare --mount`), chrooted into a root of tmpfs that holds only what it needs,
 * bind-mounted at the same paths as outside (so that its command line, its `exec:cat`
 * migrations and its metadata host's paths need no change), and runs as an unprivileged uid of
 * its tenant's (`setpriv`, no capabilities, no new privileges):
 *
 *   read-only: /usr, /etc, the system's /bin, /lib... links or folders, the guest image's
 *     folder, the base snapshot it restores from, vmkit's own code (for the metadata host);
 *   its own: its instance folder (owned by the tenant uid), its guest RAM file alone in a
 *     fresh /dev/shm, a fresh /tmp;
 *   the host's /dev, /proc and /sys (device nodes keep their permissions), and its tenant's
 *     switch folder, whose socket only the tenant's group may connect to.
 *
 * Not in it: the fleet database, the audit logs, other instances and tenants, other RAM files,
 * /root, /home. QEMU's own -runas and -chroot (7.2) drop privileges only after start-up, with
 * the programs it starts later (exec:cat, the metadata host) then needing the caller's files;
 * building the jail before QEMU starts needs no QEMU option at all.
 */

/** Tenant uids (and gids, the same numbers) come from this range, not from /etc/passwd. */
export const JAIL_ID_BASE = 0x50000000;
const JAIL_ID_SPAN = 1 << 28;
/** Each fleet folder has a block of the range: 65536 blocks of 4096 tenants. */
export const FLEET_ID_BLOCK = 1 << 12;

/**
 * The first uid of the fleet's block: a hash of its folder, so that two fleets on one host
 * (which share no database) use different blocks, but for odds of 2^-16 a pair of fleets.
 */
export function fleetIdBlock(fleetDir: string): number {
  const hash = createHash('sha256').update(fleetDir).digest();
  return JAIL_ID_BASE + (hash.readUInt16BE(0) % (JAIL_ID_SPAN / FLEET_ID_BLOCK)) * FLEET_ID_BLOCK;
}

/**
 * The uid a new tenant gets: the lowest of its fleet's block that no tenant of the fleet holds
 * (`taken`, from the fleet's database, where a unique index keeps them apart). Undefined when
 * the block is full.
 */
export function allocateTenantUid(fleetDir: string, taken: Iterable<number>): number | undefined {
  const used = new Set(taken);
  const first = fleetIdBlock(fleetDir);
  for (let uid = first; uid < first + FLEET_ID_BLOCK; uid++) if (!used.has(uid)) return uid;
  return undefined;
}

/**
 * The uid vmkit gave a tenant before uids were recorded: a hash of the fleet folder and the
 * tenant id into the range. Only the migration that records them uses it, so that tenants made
 * then keep the uid that owns their files.
 */
export function hashedTenantUid(fleetDir: string, tenant: string): number {
  const hash = createHash('sha256').update(`${fleetDir}\0${tenant}`).digest();
  return JAIL_ID_BASE + (hash.readUInt32BE(0) % JAIL_ID_SPAN);
}

/** What one jailed VMM gets. */
export interface JailSpec {
  uid: number;
  /** The empty folder the jail's root is mounted on (inside the instance folder). */
  root: string;
  /** Folders it owns and writes (its instance folder). */
  own: string[];
  /** Folders and files it reads. */
  readOnly: string[];
  /** vmkit's code folders (read-only): the metadata host runs from them. */
  code: string[];
  /** Its guest RAM file, the only file of /dev/shm it sees. */
  ramFile: string;
  /** The fleet folder: empty in the jail but for the folders above that lie in it. */
  hide: string;
  /** It gets pid and network namespaces of its own (where the host allows them: namespacesUnavailable). */
  namespaces: boolean;
  /** And a user namespace that maps its uid and gid alone (where allowed: userNamespaceUnavailable). */
  userNamespace: boolean;
}

/**
 * Why the VMM cannot be jailed here, or undefined when it can. Asked at every start, wake and
 * sleep: the answer is kept by the runtime given (the fleet's), else worked out again.
 */
export function jailUnavailable(runtime?: Runtime): string | undefined {
  return runtime ? runtime.factSync('jail-unavailable', whyUnavailable) : whyUnavailable();
}

function whyUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return `vmkit runs as uid ${process.getuid?.() ?? '?'}, not root`;
  const missing = ['unshare', 'setpriv', 'chroot', 'mount'].filter((tool) => !whichSync(tool));
  if (missing.length > 0) return `${missing.join(', ')} (util-linux, coreutils) not found on PATH`;
  return undefined;
}

/** What an instance's warnings say of its jail: none where it is whole. */
export function jailWarnings(runtime?: Runtime): string[] {
  const unjailed = jailUnavailable(runtime);
  if (unjailed) return [jailWarning(unjailed)];
  const noNamespaces = namespacesUnavailable(runtime);
  if (noNamespaces) return [`the VMM's jail has no pid or network namespace of its own: ${noNamespaces}`];
  const noUser = userNamespaceUnavailable(runtime);
  return noUser ? [`the VMM's jail has no user namespace of its own: ${noUser}`] : [];
}

export function jailWarning(reason: string): string {
  return `the VMM runs as the calling user (uid ${process.getuid?.() ?? '?'}), without a per-tenant uid, chroot or mount namespace: ${reason}`;
}

/** The system folders of / to bind read-only (a merged-/usr link such as /bin as its target). */
function systemFolders(): string[] {
  const folders = ['/usr', '/etc'];
  for (const name of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
    if (existsSync(`/${name}`)) folders.push(`/${name}`);
  }
  return folders;
}

/** The folders vmkit's code runs from (its package and, when linked from elsewhere, its node_modules). */
export function codeFolders(moduleUrl: string): string[] {
  let dir = dirname(new URL(moduleUrl).pathname);
  while (dir !== '/' && !existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  const folders = [dir];
  const modules = join(dir, 'node_modules');
  if (existsSync(modules)) {
    const real = realpathSync(modules);
    if (!real.startsWith(`${dir}/`)) folders.push(real);
  }
  const node = dirname(process.execPath);
  if (!node.startsWith('/usr/')) folders.push(node);
  return folders;
}

/** A path as an fstab field (octal escapes for the characters that would split it). */
const field = (path: string) =>
  path.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);

/**
 * The sh script, run by `unshare --mount` as root, that builds the jail and then execs
 * `setpriv` in it with the VMM's command line ("$@"). The mounts go in two groups through
 * `mount -a` with an fstab (written by the shell's own printf into the jail's root, which is
 * root's and gone with the namespace) whose entries make their own mount points: four
 * processes in all, not one per mount, on the path of every start and wake.
 */
export function jailScript(spec: JailSpec): string {
  const at = (path: string) => `${spec.root}${path}`;
  const system = [...systemFolders(), ...spec.code];
  const binds = [...spec.own, ...spec.readOnly];
  const files = binds.filter((path) => !statSync(path).isDirectory());
  const fstab = (name: string, entries: string[][]) => {
    const table = shellQuote(at(`/.${name}`));
    const lines = entries.map(([source, target, type, options]) =>
      shellQuote(`${field(source as string)} ${field(target as string)} ${type} ${options} 0 0`),
    );
    return `printf '%s\\n' ${lines.join(' ')} > ${table}; mount -a -T ${table}`;
  };
  const mkdir = (options: string) => `${options},X-mount.mkdir`;
  // /dev/kvm's group, unless that is root's (as on some hosts): never gid 0.
  const kvm = existsSync('/dev/kvm') ? statSync('/dev/kvm').gid || undefined : undefined;
  return [
    'set -e',
    // The jail's own folders (mount points, parents of bound files) must be open to the VMM's
    // uid whatever umask vmkit runs under; they live in the namespace's tmpfs, seen by no one else.
    'umask 022',
    `mount -t tmpfs -o mode=0755,size=1m vmkit-jail ${shellQuote(spec.root)}`,
    fstab('system', [
      // The fresh /tmp and /dev/shm first: vmkit's code (a checkout in /tmp, say) binds over them.
      ['vmkit-tmp', at('/tmp'), 'tmpfs', mkdir('mode=1777,size=64m')],
      ...['/dev', '/sys'].map((dir) => [dir, at(dir), 'none', mkdir('rbind')]),
      // Its pid namespace's own /proc (the host's where it has none): its processes alone.
      // With a user namespace, `unshare --mount-proc` mounts it: only the namespaces' owner may.
      ...(spec.userNamespace
        ? []
        : [
            spec.namespaces
              ? ['proc', at('/proc'), 'proc', mkdir('nosuid,nodev,noexec')]
              : ['/proc', at('/proc'), 'none', mkdir('rbind')],
          ]),
      ['vmkit-shm', at('/dev/shm'), 'tmpfs', 'mode=0755,size=1m'],
      ...system.map((dir) => [dir, at(dir), 'none', mkdir('bind,ro')]),
      // The fleet folder starts empty in the jail, even where it lies inside vmkit's code folder.
      ['vmkit-fleet', at(spec.hide), 'tmpfs', mkdir('mode=0755,size=1m')],
    ]),
    ...(files.length > 0 || spec.userNamespace
      ? [
          `mkdir -p ${[...new Set(files.map(dirname)), ...(spec.userNamespace ? ['/proc'] : [])]
            .map((dir) => shellQuote(at(dir)))
            .join(' ')}`,
        ]
      : []),
    [spec.ramFile, ...files].map((file) => `: > ${shellQuote(at(file))}`).join('; '),
    fstab('own', [
      [spec.ramFile, at(spec.ramFile), 'none', 'bind'],
      ...spec.own.map((path) => [path, at(path), 'none', mkdir('bind')]),
      ...spec.readOnly.map((path) => [
        path,
        at(path),
        'none',
        files.includes(path) ? 'bind,ro' : mkdir('bind,ro'),
      ]),
    ]),
    // libslirp hands each guestfwd command (the metadata host) a TCP socket pair made over 127.0.0.1.
    ...(spec.namespaces && !spec.userNamespace ? ['ip link set lo up'] : []),
    'umask 077', // the VMM's sockets, logs and saved states: its uid's alone
    ...(spec.userNamespace
      ? userNamespaceExec(spec.root, spec.uid, kvm)
      : [`exec chroot ${shellQuote(spec.root)} ${dropTo(spec.uid, kvm)} -- "$@"`]),
  ].join('\n');
}

const NO_CAPS = '--inh-caps=-all --bounding-set=-all --no-new-privs';
const dropTo = (uid: number, kvm: number | undefined) =>
  `setpriv --reuid=${uid} --regid=${uid} ${kvm === undefined ? '--clear-groups' : `--groups=${kvm}`} ${NO_CAPS}`;

/**
 * The end of the script with a user namespace: root drops to the tenant's uid first, which then
 * makes the user namespace itself (mapping its own uid and gid alone, onto themselves: root's
 * ids do not exist in it, its files show as the overflow id) with the pid, network and mount
 * namespaces it owns, chroots (a chrooted process may not make a user namespace, so the chroot
 * comes after), mounts its pid namespace's /proc, brings its loopback up and drops the
 * capabilities it holds there before QEMU. Only a process may write its own id maps without
 * CAP_SETUID over the host's namespace (util-linux's `--map-users` asks `newuidmap`, which wants
 * /etc/subuid ranges); kvm's group is kept as a supplementary group (not mappable: setgroups is
 * denied in the namespace, so it cannot be dropped either). `.`: the tenant's uid may not walk
 * the path to the jail's root (the fleet folder is root's 0700), only chroot to where it is.
 */
function userNamespaceExec(root: string, uid: number, kvm: number | undefined): string[] {
  const inside = `ip link set lo up && exec setpriv ${NO_CAPS} -- "$@"`;
  return [
    `cd ${shellQuote(root)}`,
    `exec ${dropTo(uid, kvm)} -- unshare --user --map-current-user --keep-caps --mount --pid --net --fork --kill-child --root=. --mount-proc=/proc -- sh -c ${shellQuote(inside)} vmkit-jail "$@"`,
  ];
}

/**
 * The command line that runs `program args` in the jail. With namespaces, `unshare` forks: the
 * program is its child, the first process of the new pid namespace (its pid 1; its own pid on
 * the host is the child's, kept through each exec), and `unshare` waits for it, killing it if
 * it is killed itself. `forks` says so: the caller records the child, not `unshare`.
 */
export function jailed(
  spec: JailSpec,
  program: string,
  args: string[],
): { program: string; args: string[]; forks: boolean } {
  return {
    program: 'unshare',
    forks: spec.namespaces,
    args: [
      '--mount',
      // With a user namespace, the script's last `unshare` makes the others and forks.
      ...(spec.namespaces && !spec.userNamespace ? ['--pid', '--net', '--kill-child'] : []),
      '--propagation',
      'private',
      '--',
      'sh',
      '-c',
      jailScript(spec),
      'vmkit-jail',
      program,
      ...args,
    ],
  };
}

/** Gives the paths (folders: all they hold) to the tenant's uid, or back to root with `uid` 0. */
export function chownTree(path: string, uid: number): void {
  if (!existsSync(path)) return;
  lchownSync(path, uid, uid); // never through a link the VMM's uid may have put in its folder
  if (!lstatSync(path).isDirectory()) return;
  for (const name of readdirSync(path)) {
    const child = join(path, name);
    if (lstatSync(child).isSymbolicLink()) continue;
    chownTree(child, uid);
  }
}

/**
 * Lets the tenant's group read a folder of root's (and what it holds) that its jailed VMMs bind
 * read-only, such as a base: root:<tenant> 0750 folders, 0640 files. Nobody else gets a bit.
 */
export function shareWithTenant(path: string, uid: number): void {
  lchownSync(path, 0, uid);
  const info = lstatSync(path);
  if (info.isSymbolicLink()) return;
  chmodSync(path, info.isDirectory() ? 0o750 : 0o640);
  if (!info.isDirectory()) return;
  for (const name of readdirSync(path)) shareWithTenant(join(path, name), uid);
}

/** The uid a tenant's VMMs run as, or undefined where they cannot be jailed (jailUnavailable says why). */
export function vmmUid(tenant: { uid: number }, runtime?: Runtime): number | undefined {
  return jailUnavailable(runtime) ? undefined : tenant.uid;
}

/**
 * Hands a VMM's folder, its RAM file and its tenant switch's socket to the tenant's uid (the
 * socket to its group, so that no other tenant's VMM may connect), and describes its jail.
 */
export function prepareJail(options: {
  uid: number;
  dir: string;
  ramFile: string;
  switchSocket: string;
  reads: string[];
  fleetDir: string;
  /** Where the namespace probe's answer is kept. */
  runtime?: Runtime;
}): JailSpec {
  const { uid, dir } = options;
  const root = join(dir, 'jail');
  // The folder was the VMM's uid's (which is ended now): a link at `jail` would put the mounts elsewhere.
  if (!lstatSync(root, { throwIfNoEntry: false })?.isDirectory())
    rmSync(root, { recursive: true, force: true });
  ensureDirSync(root);
  chownTree(dir, uid);
  lchownSync(root, 0, 0);
  lchownSync(options.ramFile, uid, uid);
  // The switch's folder (0700 as made) and socket: the tenant's group may reach and connect.
  const switchDir = dirname(options.switchSocket);
  chownSync(switchDir, 0, uid);
  chmodSync(switchDir, 0o750);
  chownSync(options.switchSocket, 0, uid);
  chmodSync(options.switchSocket, 0o660);
  return {
    uid,
    root,
    own: [dir],
    readOnly: options.reads,
    code: codeFolders(import.meta.url),
    ramFile: options.ramFile,
    hide: options.fleetDir,
    namespaces: namespacesUnavailable(options.runtime) === undefined,
    userNamespace:
      namespacesUnavailable(options.runtime) === undefined &&
      userNamespaceUnavailable(options.runtime) === undefined,
  };
}

/**
 * Why the jail gets no pid and network namespaces here (a container that forbids them), or
 * undefined when it does: asked of `unshare` once a runtime (each time without one).
 */
export function namespacesUnavailable(runtime?: Runtime): string | undefined {
  return runtime ? runtime.factSync('jail-namespaces', probeNamespaces) : probeNamespaces();
}

function probeNamespaces(): string | undefined {
  const args = ['--mount', '--pid', '--net', '--fork', '--kill-child', 'ip', 'link', 'set', 'lo', 'up'];
  const probe = spawnSync('unshare', args, {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (probe.status === 0) return undefined;
  return `unshare --pid --net ip link set lo up failed: ${(probe.stderr || probe.error?.message || `status ${probe.status}`).trim()}`;
}

/**
 * Why the jail gets no user namespace here (unprivileged user namespaces disabled, a container
 * or an AppArmor policy that refuses them), or undefined when it does: asked once a process, of
 * the same `unshare` as the jail's, run as nobody.
 */
export function userNamespaceUnavailable(runtime?: Runtime): string | undefined {
  return runtime ? runtime.factSync('jail-user-namespace', probeUserNamespace) : probeUserNamespace();
}

function probeUserNamespace(): string | undefined {
  const unshare =
    'unshare --user --map-current-user --keep-caps --mount --pid --net --fork --kill-child --root=/ --mount-proc=/proc';
  const command = `${dropTo(65534, undefined)} -- ${unshare} ip link set lo up`;
  const probe = spawnSync('sh', ['-c', command], { encoding: 'utf8', timeout: 10_000, cwd: '/' });
  if (probe.status === 0) return undefined;
  return `${unshare} as uid 65534 failed: ${(probe.stderr || probe.error?.message || `status ${probe.status}`).trim()}`;
}

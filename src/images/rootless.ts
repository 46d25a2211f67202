import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { runTool } from '../util/exec.js';
import { installHint } from '../util/tool-packages.js';
import { which } from '../util/which.js';

/**
 * Why this account cannot build a Debian root filesystem without root, if it cannot. Such a
 * build runs mmdebstrap in an unprivileged user namespace, where package files get their real
 * owners through the account's subordinate ids, and fakeroot records those owners for mke2fs.
 * Each reason is one line that names the setting and the fix.
 */
export async function rootlessBuildProblems(): Promise<string[]> {
  const problems: string[] = [];
  const sysctl = (name: string) => {
    try {
      return readFileSync(`/proc/sys/${name.replaceAll('.', '/')}`, 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  if (sysctl('user.max_user_namespaces') === '0') {
    problems.push(
      'user namespaces are disabled (user.max_user_namespaces = 0): sudo sysctl -w user.max_user_namespaces=10000',
    );
  }
  if (sysctl('kernel.unprivileged_userns_clone') === '0') {
    problems.push(
      'unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0): sudo sysctl -w kernel.unprivileged_userns_clone=1',
    );
  }
  if (sysctl('kernel.apparmor_restrict_unprivileged_userns') === '1') {
    problems.push(
      'AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1, as on Ubuntu 24.04): ' +
        'sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or give mmdebstrap an AppArmor profile that allows userns (docs/ci.md)',
    );
  }
  for (const tool of ['newuidmap', 'newgidmap', 'fakeroot', 'unshare']) {
    if (!(await which(tool))) problems.push(installHint(tool));
  }
  const user = userInfo().username;
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    if (!subordinateRange(file, user, process.getuid?.() ?? -1)) {
      problems.push(
        `${user} has no subordinate ${file.endsWith('uid') ? 'uids' : 'gids'} in ${file}: ` +
          `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${user}`,
      );
      break;
    }
  }
  if (problems.length === 0) {
    const probe = await runTool('unshare', ['--user', '--map-root-user', 'true'], { timeoutMs: 10_000 }).then(
      () => undefined,
      (error: Error) => error.message.split('\n').slice(0, 2).join(' '),
    );
    if (probe) problems.push(`this host refuses an unprivileged user namespace: ${probe}`);
  }
  return problems;
}

/** Whether `file` (/etc/subuid or /etc/subgid) gives `user` a range of at least 65536 ids. */
export function subordinateRange(file: string, user: string, uid: number): boolean {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return false;
  }
  return text.split('\n').some((line) => {
    const [name, , count] = line.split(':');
    return (name === user || name === String(uid)) && Number(count) >= 65536;
  });
}

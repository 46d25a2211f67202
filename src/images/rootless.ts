import { userInfo } from 'node:os';
import { installHint } from '../util/tool-packages.js';
import { which } from '../util/which.js';
import { checkSubids, checkUserns, readSubidFacts, readUsernsFacts } from './rootless-checks.js';

/**
 * Why this account cannot build a Debian root filesystem without root, if it cannot: one line
 * per reason, naming the setting and the fix. Such a build runs mmdebstrap in an unprivileged user
 * namespace, where package files get their real owners through the account's subordinate ids,
 * and fakeroot then shows those owners to mke2fs.
 */
export async function rootlessBuildProblems(): Promise<string[]> {
  const problems: string[] = [];
  // unshare itself is checked by the user-namespace probe below.
  if (!(await which('fakeroot'))) problems.push(installHint('fakeroot'));
  const who = { user: userInfo().username, uid: process.getuid?.() ?? -1 };
  for (const check of [checkUserns(await readUsernsFacts()), checkSubids(await readSubidFacts(who))]) {
    if (check.status !== 'ok') problems.push(check.fix ? `${check.detail}; fix: ${check.fix}` : check.detail);
  }
  return problems;
}

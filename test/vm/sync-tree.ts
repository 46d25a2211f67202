// The tree the project sync tests copy into a guest (vmkit's own transfer and rsync alike), and
// what they check there: modes, owner, symlinks, excludes, .gitignore, changes and deletions.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A git work tree with a .gitignore, excluded files (*.log, build/), a 0751 script, a symlink to it, a file to delete. */
export function writeSyncTree(project: string): void {
  execFileSync('git', ['init', '-q', project]);
  writeFileSync(join(project, '.gitignore'), 'ignored.txt\n');
  writeFileSync(join(project, 'ignored.txt'), 'no');
  writeFileSync(join(project, 'run.log'), 'no');
  mkdirSync(join(project, 'build'));
  writeFileSync(join(project, 'build', 'out.o'), 'no');
  mkdirSync(join(project, 'src', 'deep'), { recursive: true });
  writeFileSync(join(project, 'src', 'deep', 'tool.sh'), '#!/bin/sh\necho tool\n');
  chmodSync(join(project, 'src', 'deep', 'tool.sh'), 0o751);
  writeFileSync(join(project, 'src', 'gone.txt'), 'soon deleted');
  symlinkSync('deep/tool.sh', join(project, 'src', 'link'));
}

/** The guest command whose output `checkSyncedTree` reads. */
export const LIST_SYNCED_TREE =
  'cd /work/project && stat -c "%a %u" src/deep/tool.sh && readlink src/link && ./src/link && cat src/gone.txt && echo && ls -a';

/** The synced tree as the guest listed it; `present`: names that must be at its top. */
export function checkSyncedTree(listing: string, present: string[]): void {
  const [mode, target, ran, gone, ...names] = listing.trim().split('\n');
  assert.equal(mode, '751 0', 'mode kept, owned by root');
  assert.equal(target, 'deep/tool.sh');
  assert.equal(ran, 'tool');
  assert.equal(gone, 'soon deleted');
  for (const out of ['ignored.txt', 'run.log', 'build', '.git', '.vmkit'])
    assert.ok(!names.includes(out), `${out} is left out`);
  for (const name of ['.gitignore', ...present]) assert.ok(names.includes(name), `${name} is there`);
}

/** Changes the script and deletes gone.txt; CHECK_CHANGED_TREE then prints CHANGED_TREE in the guest. */
export function changeSyncTree(project: string): void {
  writeFileSync(join(project, 'src', 'deep', 'tool.sh'), '#!/bin/sh\necho changed tool\n');
  rmSync(join(project, 'src', 'gone.txt'));
}
export const CHECK_CHANGED_TREE = 'cd /work/project && ./src/link && test ! -e src/gone.txt && echo deleted';
export const CHANGED_TREE = 'changed tool\ndeleted\n';

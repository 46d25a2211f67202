// What root finds in a jailed VMM's folder is the tenant's to forge: cgroups are removed only
// where vmkit's naming puts them, files are written fresh (never through a link left there) and
// read only when plain files, and the records root acts on are kept in a folder of its own.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readAudit } from '../../src/fleet/state/audit.js';
import type { Instance, Pool, Tenant } from '../../src/fleet/state/model.js';
import { groupPaths, trustedGroups } from '../../src/fleet/vmm/cgroups.js';
import { METADATA_SPOOL, writeMetadataDocument } from '../../src/fleet/vmm/metadata.js';
import { foldMetadataReads } from '../../src/fleet/vmm/metadata-reads.js';
import {
  adoptOldSleepState,
  ensureRecordsDir,
  hasSleepState,
  recordsDir,
  sleepRecordsDir,
} from '../../src/fleet/vmm/records.js';
import { secretsDiskPath, writeSecretsDisk } from '../../src/fleet/vmm/secrets-disk.js';
import { readPlainFile, writeFreshFile } from '../../src/util/files.js';

const instance = { seq: 1, tenant: 'alpha', pool: 'web', id: 'a1', path: 'alpha/web/a1' } as Instance;

describe('what root reads and writes in a VMM folder', () => {
  const dir = mkdtempSync('/tmp/vmkit-records-test-');
  after(() => rmSync(dir, { recursive: true, force: true }));
  const folder = join(dir, 'vm', '1');
  mkdirSync(folder, { recursive: true });
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'root only\n', { mode: 0o600 });

  it('removes cgroups only where vmkit names them, whatever the record says', () => {
    const name = 'vmkit-0123456789ab';
    const refused: string[] = [];
    const groups = trustedGroups(
      [
        `/sys/fs/cgroup/memory/user.slice/${name}`,
        `/sys/fs/cgroup/${name}`,
        '/tmp/victim',
        `/tmp/${name}`,
        `/sys/fs/cgroup/memory/../../../tmp/${name}`,
        `/sys/fs/cgroup/memory//${name}`,
        '/sys/fs/cgroup/memory/vmkit-other',
        42,
      ],
      name,
      (line) => refused.push(line),
    );
    assert.deepEqual(groups, [`/sys/fs/cgroup/memory/user.slice/${name}`, `/sys/fs/cgroup/${name}`]);
    assert.equal(refused.length, 6);
    // The paths vmkit computes itself pass the same check.
    const computed = groupPaths(name);
    assert.ok(computed.length > 0, 'no cgroup hierarchy found');
    assert.deepEqual(trustedGroups(computed, name), computed);
  });

  it('writes a fresh file in place of a link, never through it', () => {
    const path = join(folder, 'fresh.part');
    symlinkSync(secret, path);
    writeFreshFile(path, 'mine');
    assert.equal(readFileSync(secret, 'utf8'), 'root only\n');
    assert.ok(lstatSync(path).isFile());
    assert.equal(readFileSync(path, 'utf8'), 'mine');
  });

  it('the secrets disk and the metadata document replace links left at their partial names', () => {
    symlinkSync(secret, `${secretsDiskPath(folder)}.part`);
    symlinkSync(secret, join(folder, 'metadata.json.part'));
    writeSecretsDisk(folder, { K: 'v' });
    writeMetadataDocument(
      folder,
      { ...instance, revision: 'r', address: '10.0.0.2', mac: '52:54:00:00:00:01' } as Instance,
      { id: 'web', image: 'tiny', vcpus: 1, memoryMiB: 128 } as Pool,
      { id: 'alpha', secrets: { K: 'v' } } as unknown as Tenant,
    );
    assert.equal(readFileSync(secret, 'utf8'), 'root only\n');
    assert.ok(lstatSync(secretsDiskPath(folder)).isFile());
    assert.match(readFileSync(join(folder, 'metadata.json'), 'utf8'), /"K":"v"/);
  });

  it('reads plain files only: a link or a FIFO is refused at once', () => {
    writeFileSync(join(folder, 'plain'), 'text');
    assert.equal(readPlainFile(join(folder, 'plain')).toString(), 'text');
    symlinkSync(secret, join(folder, 'link'));
    assert.throws(() => readPlainFile(join(folder, 'link')), /ELOOP/);
    execFileSync('mkfifo', [join(folder, 'fifo')]);
    assert.throws(() => readPlainFile(join(folder, 'fifo')), /not a regular file/);
  });

  it("a metadata spool that is a link to root's file is not folded into the tenant's log", () => {
    symlinkSync(secret, join(folder, `${METADATA_SPOOL}.2147483646`));
    foldMetadataReads(dir, [instance]);
    const events = readAudit(dir, 'alpha');
    assert.ok(!JSON.stringify(events).includes('root only'), 'the file behind the link reached the log');
    assert.ok(!existsSync(join(folder, `${METADATA_SPOOL}.2147483646`)), 'the link is left');
    assert.equal(readFileSync(secret, 'utf8'), 'root only\n');
  });

  it('keeps records in a folder of its own uid, mode 0700, beside the VMM folder', () => {
    const records = ensureRecordsDir(folder);
    assert.equal(records, recordsDir(folder));
    assert.equal(lstatSync(records).mode & 0o777, 0o700);
    chmodSync(records, 0o777);
    ensureRecordsDir(folder);
    assert.equal(lstatSync(records).mode & 0o777, 0o700, 'a loosened folder is not tightened again');
    const other = join(dir, 'vm', '2');
    symlinkSync(folder, `${other}.records`);
    assert.throws(() => ensureRecordsDir(other), /refusing to keep records/);
  });

  it("adopts an older vmkit's sleep state, never through a link or a file root did not write", () => {
    const older = join(dir, 'vm', '3');
    mkdirSync(join(older, 'sleep'), { recursive: true });
    for (const name of ['state', 'ram.delta', 'base.json']) writeFileSync(join(older, 'sleep', name), name);
    adoptOldSleepState(older);
    assert.ok(hasSleepState(older));
    assert.equal(readFileSync(join(sleepRecordsDir(older), 'ram.delta'), 'utf8'), 'ram.delta');
    // A link at `sleep` could name another instance's records: its delta would wake here.
    const linked = join(dir, 'vm', '4');
    mkdirSync(linked);
    mkdirSync(join(dir, 'elsewhere'));
    for (const name of ['state', 'ram.delta', 'base.json']) writeFileSync(join(dir, 'elsewhere', name), name);
    symlinkSync(join(dir, 'elsewhere'), join(linked, 'sleep'));
    adoptOldSleepState(linked);
    assert.ok(!hasSleepState(linked));
    assert.ok(existsSync(join(dir, 'elsewhere', 'ram.delta')), 'moved out of the folder a link named');
    // A delta that is a link the VMM's uid put there is dropped, and with it the state.
    const forged = join(dir, 'vm', '5');
    mkdirSync(join(forged, 'sleep'), { recursive: true });
    writeFileSync(join(forged, 'sleep', 'state'), 'state');
    writeFileSync(join(forged, 'sleep', 'base.json'), '{}');
    symlinkSync(secret, join(forged, 'sleep', 'ram.delta'));
    adoptOldSleepState(forged);
    assert.ok(!hasSleepState(forged));
    assert.equal(readFileSync(secret, 'utf8'), 'root only\n');
  });
});

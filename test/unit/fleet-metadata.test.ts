// The metadata endpoint's spool, folded into the audit log: the fleet's records decide tenant and
// target (the spool is the jailed VMM's to write), and an oversized spool is cut and said so.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readAudit } from '../../src/fleet/state/audit.js';
import type { Instance } from '../../src/fleet/state/model.js';
import { METADATA_SPOOL } from '../../src/fleet/vmm/metadata.js';
import { foldMetadataReads, tenantAudit } from '../../src/fleet/vmm/metadata-reads.js';

const instance = { seq: 1, tenant: 'alpha', pool: 'web', id: 'a1', path: 'alpha/web/a1' } as Instance;

describe('metadata reads spool', () => {
  it("folds reads into the instance's own tenant's log, whatever a line claims", () => {
    const dir = mkdtempSync('/tmp/vmkit-meta-test-');
    try {
      const folder = join(dir, 'vm', '1');
      mkdirSync(folder, { recursive: true });
      const forged = {
        time: '2026-01-02T03:04:05.000Z',
        tenant: 'beta',
        target: 'beta/db/b1',
        action: 'secret.read',
        outcome: 'ok',
        detail: 'GET /secrets (TOKEN)',
      };
      writeFileSync(join(folder, METADATA_SPOOL), `${JSON.stringify(forged)}\nnot json\n`);
      const events = tenantAudit(dir, [instance], 'alpha');
      assert.equal(events.length, 2);
      assert.deepEqual(
        events.map((e) => [e.tenant, e.target, e.action, e.outcome]),
        [
          ['alpha', 'alpha/web/a1', 'secret.read', 'ok'],
          ['alpha', 'alpha/web/a1', 'metadata.read', 'refused'],
        ],
      );
      assert.equal(events[0]?.time, forged.time);
      assert.deepEqual(readAudit(dir, 'beta'), []);
      assert.deepEqual(readdirSync(folder), [], 'the spool is left after folding');
      assert.equal(foldMetadataReads(dir, [instance]), 0, 'a second fold found reads again');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('folds only the first MiB of an oversized spool, and says so', () => {
    const dir = mkdtempSync('/tmp/vmkit-meta-test-');
    try {
      const folder = join(dir, 'vm', '1');
      mkdirSync(folder, { recursive: true });
      const line = `${JSON.stringify({ action: 'metadata.read', outcome: 'ok', detail: 'x'.repeat(400) })}\n`;
      writeFileSync(join(folder, METADATA_SPOOL), line.repeat(Math.ceil((2 << 20) / line.length)));
      foldMetadataReads(dir, [instance]);
      const events = readAudit(dir, 'alpha');
      assert.ok(events.length < (1 << 20) / 400, `${events.length} events folded`);
      assert.match(events.at(-1)?.detail ?? '', /only its first 1048576/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

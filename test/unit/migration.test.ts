// Saving a guest by migration: waitForMigration returns only once QEMU would take `cont`.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { waitForMigration } from '../../src/backends/qemu/migration.js';
import type { QmpClient } from '../../src/backends/qemu/qmp.js';
import { SnapshotError } from '../../src/errors.js';

/** A QMP that answers each command from its list of answers in turn (the last one repeats). */
function scriptedQmp(answers: Record<string, unknown[]>) {
  const asked: string[] = [];
  const qmp = {
    async execute(command: string) {
      asked.push(command);
      const list = answers[command] ?? [];
      return list.length > 1 ? list.shift() : list[0];
    },
  };
  return { qmp: qmp as unknown as QmpClient, asked };
}

describe('waitForMigration', () => {
  test('waits past "completed" until the guest leaves finish-migrate (QEMU refuses cont before)', async () => {
    const { qmp, asked } = scriptedQmp({
      'query-migrate': [{ status: 'active' }, { status: 'completed' }],
      'query-status': [{ status: 'finish-migrate' }, { status: 'finish-migrate' }, { status: 'postmigrate' }],
    });
    await waitForMigration(qmp, 'of a test', 5_000);
    assert.deepEqual(asked, [
      'query-migrate',
      'query-migrate',
      'query-status',
      'query-status',
      'query-status',
    ]);
  });

  test("a failed migration fails with QEMU's reason; one stuck in finish-migrate times out", async () => {
    const failed = scriptedQmp({ 'query-migrate': [{ status: 'failed', 'error-desc': 'disk full' }] });
    await assert.rejects(waitForMigration(failed.qmp, 'of a test', 5_000), (error: Error) => {
      assert.ok(error instanceof SnapshotError);
      assert.match(error.message, /migration of a test failed: disk full/);
      return true;
    });
    const stuck = scriptedQmp({
      'query-migrate': [{ status: 'completed' }],
      'query-status': [{ status: 'finish-migrate' }],
    });
    await assert.rejects(waitForMigration(stuck.qmp, 'of a test', 200), /did not finish it within 200 ms/);
  });
});

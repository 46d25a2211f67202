import { SnapshotError, TimeoutError } from '../../errors.js';
import { shellQuote } from '../../util/shell.js';
import { Deadline, sleep } from '../../util/time.js';
import type { QmpClient } from './qmp.js';

/**
 * Saving and loading a guest through QEMU's migration. With guest RAM in a shared file and the
 * x-ignore-shared capability, the stream holds device state only and the RAM file is copied
 * on its own.
 */

/** Migrates the paused guest's state into `path`; waits until QEMU says it completed. */
export async function migrateOut(
  qmp: QmpClient,
  path: string,
  options: { ignoreShared: boolean; timeoutMs: number; what: string },
): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'x-ignore-shared', state: options.ignoreShared }],
  });
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(path)}` });
  await waitForMigration(qmp, options.what, options.timeoutMs);
}

const ENDED = new Set(['completed', 'failed', 'cancelled']);

/**
 * Loads the state in `path` into a QEMU started with -incoming defer, then resumes the guest. The
 * end of the load is QEMU's MIGRATION event, not a poll. Not on QEMU's command line (`-incoming
 * exec:...`), where it would start with QEMU: x-ignore-shared, which a state without its RAM
 * needs, is no `-global migration.` property before QEMU 8, and the load cannot start before
 * QEMU's own start-up ends anyway.
 */
export async function migrateIn(
  qmp: QmpClient,
  path: string,
  options: { ignoreShared: boolean; timeoutMs: number },
): Promise<void> {
  const what = `loading ${path}`;
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'events', state: true },
      ...(options.ignoreShared ? [{ capability: 'x-ignore-shared', state: true }] : []),
    ],
  });
  const ended = qmp.waitForEvent('MIGRATION', options.timeoutMs, (event) =>
    ENDED.has(String(event.data?.status)),
  );
  ended.catch(() => {});
  await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(path)}` });
  const status = await ended.then(
    (event) => String(event.data?.status),
    (error: Error) => {
      throw error instanceof TimeoutError
        ? new SnapshotError(`migration ${what} did not complete within ${options.timeoutMs} ms`)
        : error;
    },
  );
  if (status !== 'completed') {
    const info = await qmp
      .execute<{ 'error-desc'?: string }>('query-migrate')
      .catch((): { 'error-desc'?: string } => ({}));
    throw new SnapshotError(`migration ${what} ${status}: ${info['error-desc'] ?? 'QEMU gave no reason'}`);
  }
  await qmp.execute('cont');
}

/**
 * Polls query-migrate until the migration completed, then until the guest has left the
 * `finish-migrate` run state (QEMU says completed a moment before it moves the guest on to
 * `postmigrate`, and refuses `cont` in between: "Migration is not finalized yet", seen in CI).
 * Fails with QEMU's reason otherwise.
 */
export async function waitForMigration(qmp: QmpClient, what: string, timeoutMs: number): Promise<void> {
  const deadline = new Deadline(timeoutMs, `migration ${what}`);
  let status = 'none';
  while (!deadline.expired) {
    const info = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
    status = info.status ?? 'none';
    if (status === 'completed') {
      while (!deadline.expired) {
        const run = await qmp.execute<{ status?: string }>('query-status');
        if (run.status !== 'finish-migrate') return;
        await sleep(5);
      }
      throw new SnapshotError(
        `migration ${what} completed, but QEMU did not finish it within ${timeoutMs} ms`,
      );
    }
    if (status === 'failed' || status === 'cancelled') {
      throw new SnapshotError(`migration ${what} ${status}: ${info['error-desc'] ?? 'QEMU gave no reason'}`);
    }
    await sleep(5);
  }
  throw new SnapshotError(
    `migration ${what} did not complete within ${timeoutMs} ms (last status: ${status})`,
  );
}

/**
 * Resumes a guest whose saving was cut off: QEMU carries an outgoing migration on without its
 * caller and leaves the guest paused (postmigrate) when it ends, so cancel it first, wait until
 * it settled, then `cont`.
 */
export async function cancelMigrationAndResume(qmp: QmpClient, timeoutMs = 10_000): Promise<void> {
  await qmp.execute('migrate_cancel');
  const deadline = new Deadline(timeoutMs, 'migration cancel');
  while (!deadline.expired) {
    const { status } = await qmp.execute<{ status?: string }>('query-migrate');
    if (!['setup', 'active', 'cancelling', 'device', 'pre-switchover'].includes(status ?? 'none')) {
      // A migration that completed after all is not finalized until the guest leaves finish-migrate.
      const run = await qmp.execute<{ status?: string }>('query-status');
      if (run.status !== 'finish-migrate') break;
    }
    await sleep(20);
  }
  await qmp.execute('cont');
}

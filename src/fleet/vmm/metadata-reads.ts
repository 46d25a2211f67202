import { existsSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readPlainFile } from '../../util/files.js';
import { processRunsSync } from '../../util/scratch.js';
import { audit, readAudit } from '../state/audit.js';
import type { Instance } from '../state/model.js';
import { METADATA_SPOOL } from './metadata.js';
import { instanceDir } from './vm.js';

/**
 * Moves what the instances' metadata endpoints recorded (one JSON line per read, in the
 * instance folder's spool, written by the jailed VMM's uid) into their tenants' audit logs.
 * The tenant and the target come from the fleet's own records: the spool is the VMM's to
 * write, so a line can never land in another tenant's log. Run before the log is read and
 * before an instance folder is removed.
 */
export function foldMetadataReads(fleetDir: string, instances: Instance[]): number {
  let folded = 0;
  for (const instance of instances) {
    const dir = instanceDir(fleetDir, instance.seq);
    if (!existsSync(dir)) continue;
    const spool = join(dir, METADATA_SPOOL);
    // Taken aside first: reads that come meanwhile start a new spool. A taken file of a folder
    // that died before its end is folded by the next call (its pid is gone).
    const taken = `${spool}.${process.pid}`;
    try {
      renameSync(spool, taken);
    } catch {}
    for (const name of readdirSync(dir)) {
      if (!name.startsWith(`${METADATA_SPOOL}.`)) continue;
      const pid = Number(name.slice(METADATA_SPOOL.length + 1));
      if (pid !== process.pid && processRunsSync(pid)) continue;
      const file = join(dir, name);
      const { lines, bytes } = readSpool(file);
      for (const line of lines) {
        if (line.trim() === '') continue;
        audit(fleetDir, { ...fromSpool(line), tenant: instance.tenant, target: instance.path });
        folded++;
      }
      if (bytes > MAX_SPOOL_BYTES) {
        audit(fleetDir, {
          tenant: instance.tenant,
          action: 'metadata.read',
          target: instance.path,
          outcome: 'failed',
          detail: `metadata spool of over ${MAX_SPOOL_BYTES} bytes: only its first ${MAX_SPOOL_BYTES} were folded`,
        });
      }
      rmSync(file, { force: true });
    }
  }
  return folded;
}

/** More than any honest endpoint writes between two reads of the log: the VMM's uid wrote it. */
const MAX_SPOOL_BYTES = 1 << 20;

/**
 * The spool's lines, and its size. The VMM's uid names these files: one that is a link (to a
 * file only root may read), a FIFO or a device is not read, and is reported as empty.
 */
function readSpool(file: string): { lines: string[]; bytes: number } {
  try {
    const data = readPlainFile(file, MAX_SPOOL_BYTES + 1);
    return { lines: data.subarray(0, MAX_SPOOL_BYTES).toString('utf8').split('\n'), bytes: data.length };
  } catch {
    return { lines: [], bytes: 0 };
  }
}

/** One spool line as an audit event's fields, bounded and checked (the VMM's uid wrote it). */
function fromSpool(line: string) {
  let read: Record<string, unknown> = {};
  try {
    read = JSON.parse(line) as Record<string, unknown>;
  } catch {}
  const text = (value: unknown, max: number) => (typeof value === 'string' ? value.slice(0, max) : '');
  const time = text(read.time, 40);
  return {
    time: Number.isNaN(Date.parse(time)) ? new Date().toISOString() : time,
    actor: text(read.actor, 120) || 'metadata endpoint',
    action: read.action === 'secret.read' ? 'secret.read' : 'metadata.read',
    outcome: read.outcome === 'ok' ? ('ok' as const) : ('refused' as const),
    detail: text(read.detail, 500) || `unreadable spool line: ${line.slice(0, 200)}`,
  };
}

/** The tenant's audit log with its instances' metadata reads folded in first. */
export function tenantAudit(fleetDir: string, instances: Instance[], tenant: string, tail?: number) {
  foldMetadataReads(
    fleetDir,
    instances.filter((instance) => instance.tenant === tenant),
  );
  return readAudit(fleetDir, tenant, tail);
}

import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { ensurePrivateDir, PRIVATE_FILE } from '../../util/private.js';

/** One audit event: who did what to which instance, and how it went. */
export interface AuditEvent {
  time: string;
  tenant: string;
  actor: string;
  action: string;
  /** `<tenant>/<pool>/<instance>`, `<tenant>/<pool>` or `<tenant>`. */
  target: string;
  outcome: 'ok' | 'refused' | 'failed' | 'repaired';
  detail?: string;
}

export const auditPath = (fleetDir: string, tenant: string) => join(fleetDir, 'audit', `${tenant}.jsonl`);

/** Who is acting: the user and this process. */
export function currentActor(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {}
  return `${user} (pid ${process.pid})`;
}

/**
 * Appends one JSON line to the tenant's audit log. A line under PIPE_BUF written with O_APPEND
 * lands whole even when several CLI processes write at once.
 */
export function audit(
  fleetDir: string,
  event: Omit<AuditEvent, 'time' | 'actor'> & { actor?: string; time?: string },
): void {
  ensurePrivateDir(join(fleetDir, 'audit'));
  const line: AuditEvent = {
    ...event,
    time: event.time ?? new Date().toISOString(),
    actor: event.actor ?? currentActor(),
  };
  if (line.detail && line.detail.length > 2000) line.detail = `${line.detail.slice(0, 2000)}…`;
  appendFileSync(auditPath(fleetDir, event.tenant), `${JSON.stringify(line)}\n`, { mode: PRIVATE_FILE });
}

export function readAudit(fleetDir: string, tenant: string, tailCount?: number): AuditEvent[] {
  const path = auditPath(fleetDir, tenant);
  if (!existsSync(path)) return [];
  const events = readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditEvent);
  return tailCount === undefined ? events : events.slice(-tailCount);
}

import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetworkError } from '../errors.js';
import {
  type DetachedRecord,
  isRunning,
  readRecord,
  spawnDetached,
  stopDetached,
} from '../runtime/detached.js';
import { nodeEntry } from '../runtime/node-entry.js';
import { ensureDirSync } from '../util/files.js';
import { sleep } from '../util/time.js';
import type { SwitchStats } from './switch.js';

/**
 * A VirtualSwitch in a small detached process of its own, kept in folder `dir`: `switch.sock`
 * (where NICs plug in), `switch.json` (its record), `switch.log`, `stats.json`. It outlives the
 * vmkit process that started it; any later one finds it by its folder.
 */
export const switchSocket = (dir: string) => join(dir, 'switch.sock');
const recordPath = (dir: string) => join(dir, 'switch.json');

export function findSwitchDaemon(dir: string): DetachedRecord | undefined {
  const record = readRecord(recordPath(dir));
  return isRunning(record) && existsSync(switchSocket(dir)) ? record : undefined;
}

/** The running switch of `dir`, started when there is none; resolves once it listens. */
export async function ensureSwitchDaemon(
  dir: string,
  name: string,
  timeoutMs = 10_000,
): Promise<DetachedRecord> {
  const running = findSwitchDaemon(dir);
  if (running) return running;
  ensureDirSync(dir);
  const socket = switchSocket(dir);
  if (Buffer.byteLength(socket) > 107) {
    throw new NetworkError(
      `switch ${name}: socket path ${socket} is longer than 107 bytes; use a shorter fleet folder`,
    );
  }
  await stopDetached(readRecord(recordPath(dir)), 1000);
  rmSync(socket, { force: true });
  const { program, args } = nodeEntry(import.meta.url, './switch-host', [
    name,
    socket,
    join(dir, 'stats.json'),
  ]);
  const record = spawnDetached({
    program,
    args,
    logPath: join(dir, 'switch.log'),
    recordPath: recordPath(dir),
    marker: socket,
  });
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(socket)) {
    if (!isRunning(record) || Date.now() > deadline) {
      await stopDetached(record, 0);
      const log = existsSync(join(dir, 'switch.log'))
        ? readFileSync(join(dir, 'switch.log'), 'utf8').slice(-1500)
        : '';
      throw new NetworkError(
        `switch ${name} did not start listening on ${socket} within ${timeoutMs} ms: ${log.trim() || '(no output)'}`,
      );
    }
    await sleep(20);
  }
  return record;
}

export async function stopSwitchDaemon(dir: string): Promise<void> {
  await stopDetached(readRecord(recordPath(dir)));
  rmSync(recordPath(dir), { force: true });
  rmSync(switchSocket(dir), { force: true });
}

/** Names the switch's ports in its counters: MAC -> machine name (written whole, then renamed). */
export function nameSwitchPorts(dir: string, names: Record<string, string>): void {
  ensureDirSync(dir);
  const path = join(dir, 'macs.json');
  writeFileSync(`${path}.part`, JSON.stringify(names));
  renameSync(`${path}.part`, path);
}

/** The switch's counters as it last wrote them (every second). */
export function switchDaemonStats(dir: string): (SwitchStats & { at: string }) | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, 'stats.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

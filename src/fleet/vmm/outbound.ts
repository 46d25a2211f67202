import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  OUTBOUND_LOG,
  OUTBOUND_SOCKET,
  type OutboundNet,
  relayCommand,
  relayReady,
  relaySockets,
} from '../../backends/outbound/launch.js';
import { tail, VmmStartError } from '../../errors.js';
import {
  type DetachedRecord,
  isRunning,
  processesNaming,
  readRecord,
  spawnDetached,
  stopDetached,
} from '../../runtime/detached.js';
import { sleep } from '../../util/time.js';
import { ensureRecordsDir, recordsDir } from './records.js';

/**
 * A fleet instance's NIC out (eth2): its QEMU connects to a relay of its own, started detached
 * beside it (outside the jail, before QEMU); where the VMM is jailed, the relay runs as the
 * tenant's uid once QEMU is in. The relay ends when QEMU goes (quit, sleep, crash), and
 * `stopRelay` ends it with the VMM (`killVm`), so nothing outlives an instance's VMM.
 */
export const FLEET_OUTBOUND: OutboundNet = {
  subnet: '10.0.2.0/24',
  address: '10.0.2.15',
  gateway: '10.0.2.2',
  nameserver: '10.0.2.3',
};

// Root acts on these (signals the recorded pid, reads the log into errors): they live in the
// instance's records, which the tenant's uid cannot write, not in its folder.
const recordPath = (dir: string) => join(recordsDir(dir), 'outbound.json');
const logPath = (dir: string) => join(recordsDir(dir), OUTBOUND_LOG);
const READY_MS = 15_000;

/** Starts the instance's relay and resolves once QEMU may connect to it. */
export async function startRelayDetached(dir: string, uid: number | undefined): Promise<DetachedRecord> {
  await stopRelay(dir);
  // Started as root where the VMM is jailed: the relay hands its socket to the tenant's uid and
  // becomes it (the instance folder's parents are root's alone, so it cannot start as that uid).
  ensureRecordsDir(dir);
  const { program, args } = relayCommand(dir, FLEET_OUTBOUND, uid);
  const record = spawnDetached({
    program,
    args,
    logPath: logPath(dir),
    recordPath: recordPath(dir),
    marker: join(dir, OUTBOUND_SOCKET),
  });
  const deadline = Date.now() + READY_MS;
  while (!relayReady(dir)) {
    if (!isRunning(record) || Date.now() > deadline) {
      const late = isRunning(record);
      await stopDetached(record, 0);
      let said = '';
      try {
        said = tail(readFileSync(logPath(dir), 'utf8').trim(), 1000);
      } catch {}
      throw new VmmStartError(
        `outbound access: the relay for ${dir} ${late ? `was not ready within ${READY_MS} ms` : 'exited'}: ${said || '(it said nothing)'}`,
      );
    }
    await sleep(20);
  }
  return record;
}

/** Ends the instance's relay, recorded or not. */
export async function stopRelay(dir: string): Promise<void> {
  const recorded = readRecord(recordPath(dir));
  const processes = isRunning(recorded) ? [recorded] : processesNaming(join(dir, OUTBOUND_SOCKET));
  for (const record of processes) await stopDetached(record, 0);
  rmSync(recordPath(dir), { force: true });
  for (const path of relaySockets(dir)) rmSync(path, { force: true }); // stale ones would pass for ready
}

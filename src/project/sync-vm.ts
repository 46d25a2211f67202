import { ConfigError, VmkitError } from '../errors.js';
import { which } from '../util/which.js';
import type { HubClient } from './hub-client.js';
import { rsyncMap } from './rsync.js';
import { guestSshSetup, NoSshdError, prepareSsh } from './ssh.js';
import { DATA_MOUNT, dataDeviceOf } from './state.js';
import { type SyncReport, syncMap } from './sync.js';
import type { ProjectVm } from './vm-handle.js';

export type SyncMethod = 'vmkit' | 'rsync' | 'auto';

/**
 * How this sync copies. `vmkit` is the default: bench/workspace.ts measured it 3 to 11 times
 * faster than rsync over SSH on 5,000 files under TCG (a no-change run compares host metadata with
 * its manifest and never talks to the guest; rsync pays an SSH login and a walk of the tree in the
 * emulated guest), and it needs nothing in the guest but tar. `rsync` needs rsync on both sides
 * and the guest's sshd, and fails naming what is missing; `auto` takes rsync when all of that is there.
 */
async function resolveMethod(
  hub: HubClient,
  pvm: ProjectVm,
  method: SyncMethod,
): Promise<{ method: 'vmkit' } | { method: 'rsync'; config: string; host: string }> {
  if (method === 'vmkit') return { method };
  const host = (await which('rsync')) !== undefined;
  if (method === 'rsync' && !host) {
    throw new ConfigError('sync --method rsync: rsync is not installed on this host (apt-get install rsync)');
  }
  if (method === 'auto') {
    const guest = await guestSshSetup(hub, pvm, { authorize: false, wait: false });
    if (!(host && guest.sshd && guest.rsync)) return { method: 'vmkit' };
  }
  const ssh = await prepareSsh(hub, pvm).catch((error: Error) => {
    throw error instanceof NoSshdError
      ? new ConfigError(`sync --method rsync: ${error.message.replace(/; use vmkit shell.*/, '')}`)
      : error;
  });
  if (!ssh.rsync) {
    throw new ConfigError(
      `sync --method rsync: the image of VM ${pvm.vm.name} has no rsync (add it to the recipe's packages, or use --method vmkit)`,
    );
  }
  return { method: 'rsync', config: ssh.config, host: ssh.host };
}

/**
 * Refuses unless the guest has the data disk mounted at DATA_MOUNT, asked of the guest itself:
 * files synced into the guest's RAM root would be recorded as sent and gone after a reboot.
 */
export async function checkDataMounted(hub: HubClient, pvm: ProjectVm): Promise<void> {
  const device = dataDeviceOf(pvm.dir);
  const found = await hub.run(
    `while read -r dev dir rest; do [ "$dir" = ${DATA_MOUNT} ] && echo "$dev"; done < /proc/mounts; true`,
    30_000,
  );
  const mounted = found.stdout.toString().trim().split('\n').filter(Boolean);
  if (!mounted.includes(device)) {
    throw new DataNotMountedError(
      `VM ${pvm.vm.name}: ${DATA_MOUNT} is not mounted from its data disk ${device} in the guest (${mounted.length > 0 ? `it is ${mounted.join(', ')}` : 'nothing is mounted there'}); run vmkit up to mount it`,
    );
  }
}

export class DataNotMountedError extends VmkitError {
  override name = 'DataNotMountedError';
}

/** Syncs every map of the VM with the chosen method; `onMap` hears each map's report as it is done. */
export async function syncVm(
  hub: HubClient,
  pvm: ProjectVm,
  options: { method?: SyncMethod; full?: boolean },
  onMap: (report: SyncReport, method: 'vmkit' | 'rsync', ms: number) => void,
): Promise<void> {
  await checkDataMounted(hub, pvm);
  const chosen = await resolveMethod(hub, pvm, options.method ?? pvm.vm.syncMethod);
  for (const map of pvm.vm.sync) {
    const start = performance.now();
    const report =
      chosen.method === 'rsync'
        ? await rsyncMap(chosen.config, chosen.host, pvm.dir, pvm.run, map)
        : await syncMap(hub, pvm.dir, pvm.run, map, { full: options.full });
    onMap(report, chosen.method, Math.round(performance.now() - start));
  }
}

import type { OutboundNicSpec, ServiceNicSpec } from '../../backends/backend.js';
import { macAddress } from '../../machine/identity.js';
import { nodeEntry } from '../../runtime/node-entry.js';
import type { Runtime } from '../../runtime/runtime.js';
import { FLEET_OUTBOUND } from './outbound.js';
import { fleetBackend } from './vmms.js';

/** What fleet instances' VMMs get beyond a machine's: the metadata NIC, the NIC out, the sandbox. */

/** Where the instance reaches its metadata endpoint, over its own user-mode NIC (eth1). */
export const METADATA_ADDRESS = '169.254.169.254';
export const METADATA_NIC_ADDRESS = '169.254.169.15/24';

/** How many metadata hosts (node, ~40 MB each) one instance may have at once. */
export const METADATA_HOSTS = 4;
/** How long a connection waits for a free metadata host before it is closed unanswered. */
const METADATA_WAIT_S = 60;

/**
 * What the VMM runs for each connection to the metadata endpoint: a shell (~1 MB) that takes one of the instance's
 * METADATA_HOSTS slots (a lock file in its folder, held by `flock` while the host runs, freed
 * however it ends) and runs the metadata host in it, or waits for one: a guest that opens many
 * connections at once gets its answers in turn, from a bounded number of node processes.
 */
const SLOTTED = [
  'd=$1; shift; n=0;',
  `while [ $n -lt ${METADATA_WAIT_S * 5} ]; do`,
  `for s in ${Array.from({ length: METADATA_HOSTS }, (_, i) => i + 1).join(' ')}; do`,
  'flock -n -E 75 "$d/metadata-slot-$s" "$@"; r=$?; [ $r = 75 ] || exit $r;',
  'done; n=$((n+1)); sleep 0.2;',
  'done; exit 1',
].join(' ');

const METADATA_MAC = 'metadata';

/**
 * The NIC to the metadata endpoint (eth1): it reaches nothing but the metadata address, where
 * each connection runs the metadata host of the instance's folder `dir` (METADATA_HOSTS at a
 * time), so the instance can only ever ask about itself. A pool's base has no endpoint.
 */
export function metadataNic(macName: string, dir?: string): ServiceNicSpec {
  return {
    id: 'meta',
    mac: macAddress(macName, METADATA_MAC),
    subnet: '169.254.169.0/24',
    hostAddress: '169.254.169.1',
    ...(dir === undefined
      ? {}
      : { endpoint: { address: METADATA_ADDRESS, port: 80, command: metadataCommand(dir) } }),
  };
}

/** The metadata host in one of the folder's slots, as a program and its arguments. */
function metadataCommand(dir: string): string[] {
  const { program, args } = nodeEntry(import.meta.url, './metadata-host', [dir]);
  return ['/bin/sh', '-c', SLOTTED, 'metadata-host', dir, program, ...args];
}

/** The outbound NIC's guest side (eth2), in `FLEET_OUTBOUND`'s subnet (`outbound.ts`). */
export const OUTBOUND_NIC = { index: 2, address: '10.0.2.15/24', gateway: '10.0.2.2' };

/**
 * The NIC out, for tenants that asked: user-mode networking behind the instance's relay
 * (`outbound.ts`), which reaches the network beyond the host but not the host itself.
 */
export const outboundNic = (macName: string): OutboundNicSpec => ({
  mac: macAddress(macName, 'outbound'),
  net: FLEET_OUTBOUND,
});

/** Whether this host's VMM can apply its filter of system calls (VmmSpec.sandbox). */
export async function sandboxAvailable(runtime: Runtime): Promise<boolean> {
  return (await fleetBackend().sandbox?.available(runtime)) ?? false;
}

/** What a node's instances run without, where sandboxAvailable is false. */
export function noSandbox(): string {
  const backend = fleetBackend();
  return backend.sandbox
    ? `${backend.sandbox.description} is not applied: this host's ${backend.title} cannot apply it`
    : `no filter of system calls is applied: ${backend.title} has none`;
}

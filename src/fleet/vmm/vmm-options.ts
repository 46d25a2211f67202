import { outboundArgs } from '../../backends/outbound/launch.js';
import { qemuBinary } from '../../backends/qemu/process.js';
import { macAddress } from '../../machine/identity.js';
import { nodeEntry } from '../../runtime/node-entry.js';
import type { Runtime } from '../../runtime/runtime.js';
import { runTool } from '../../util/exec.js';
import { shellQuote } from '../../util/shell.js';
import { FLEET_OUTBOUND } from './outbound.js';

/** What fleet instances' QEMUs get beyond a machine's command line: the metadata NIC, seccomp. */

/** Where the instance reaches its metadata endpoint, over its own user-mode NIC (eth1). */
export const METADATA_ADDRESS = '169.254.169.254';
export const METADATA_NIC_ADDRESS = '169.254.169.15/24';

/** How many metadata hosts (node, ~40 MB each) one instance may have at once. */
export const METADATA_HOSTS = 4;
/** How long a connection waits for a free metadata host before it is closed unanswered. */
const METADATA_WAIT_S = 60;

/**
 * What QEMU runs for each connection: a shell (~1 MB) that takes one of the instance's
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

/**
 * A user-mode NIC that reaches nothing (restrict=on) but the metadata address, where QEMU runs
 * the metadata host for each connection (METADATA_HOSTS at a time): the instance can only ever
 * ask about itself. libslirp splits the command as a shell would (g_shell_parse_argv) and runs it
 * without a shell, hence the explicit `sh -c`.
 */
export function metadataNic(dir: string, instancePath: string): string[] {
  const { program, args } = nodeEntry(import.meta.url, './metadata-host', [dir]);
  const command = ['/bin/sh', '-c', SLOTTED, 'metadata-host', dir, program, ...args]
    .map(shellQuote)
    .join(' ')
    .replaceAll(',', ',,');
  return metadataDevice(`fleet/${instancePath}`, `,guestfwd=tcp:${METADATA_ADDRESS}:80-cmd:${command}`);
}

/** The metadata NIC's device on a user-mode network that reaches nothing (a pool's base has no endpoint). */
export function metadataDevice(macName: string, rules = ''): string[] {
  return [
    '-netdev',
    `user,id=meta,net=169.254.169.0/24,host=169.254.169.1,restrict=on${rules}`,
    '-device',
    `virtio-net-pci,netdev=meta,mac=${macAddress(macName, 'metadata')},id=metanic`,
  ];
}

/** The outbound NIC's guest side (eth2), in `FLEET_OUTBOUND`'s subnet (`outbound.ts`). */
export const OUTBOUND_NIC = { index: 2, address: '10.0.2.15/24', gateway: '10.0.2.2' };

/**
 * The NIC out, for tenants that asked: QEMU's user-mode network behind the instance's relay
 * (`outbound.ts`), which reaches the network beyond the host but not the host itself. (It was
 * the user-mode network alone, with restrict=off, which maps 10.0.2.2 to the host's loopback.)
 */
export function outboundNic(macName: string, dir: string): string[] {
  return outboundArgs('out', dir, FLEET_OUTBOUND, macAddress(macName, 'outbound'), 3000);
}

/**
 * QEMU's seccomp sandbox: no obsolete system calls, no scheduler or resource changes. Spawning
 * stays allowed: QEMU starts `exec:cat` for every sleep and wake (this QEMU has no `file:`
 * migration, and an `fd:` one needs a descriptor passed over QMP) and the metadata host for each
 * connection. So does elevateprivileges: it denies setsid too, which libslirp calls in the child
 * of every guestfwd command, so the metadata host would never start (seen: the guest's request
 * gets no response). set*uid and set*gid would gain the VMM nothing: setpriv leaves it no
 * capability and no new privileges.
 */
export const SANDBOX_ARGS = ['-sandbox', 'on,obsolete=deny,resourcecontrol=deny'];

/** Whether this host's QEMU was built with seccomp (it parses -sandbox before -version). */
export function qemuHasSandbox(runtime: Runtime): Promise<boolean> {
  return runtime.fact('qemu-sandbox', () =>
    runTool(qemuBinary(), ['-sandbox', 'on', '-version'], { timeoutMs: 10_000 }).then(
      () => true,
      () => false,
    ),
  );
}

export const NO_SANDBOX = "QEMU's seccomp sandbox is not applied: this QEMU was built without it (-sandbox)";

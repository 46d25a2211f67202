import { VmmStartError } from '../../errors.js';
import type { Runtime } from '../../runtime/runtime.js';
import { runTool } from '../../util/exec.js';
import type { Backend, VmmSpec } from '../backend.js';
import { qemuDetached } from './detached.js';
import { QEMU_MISSING, QemuProcess, qemuBinary } from './process.js';
import { qemuHasSandbox, SANDBOX_DESCRIPTION } from './sandbox.js';

/** QEMU: the backend that runs everywhere, under KVM or software emulation (TCG). */
export const qemuBackend: Backend = {
  name: 'qemu',
  title: 'QEMU',
  capabilities: {
    agentTransport: 'serial-port',
    network: 'stream',
    snapshot: ['full'],
    cowFork: true,
    accels: ['kvm', 'tcg'],
    // With display: true, a VGA card (still -display none: nothing opens a window): screendump
    // and send-key over QMP.
    display: true,
    consoleInput: true,
    hostNetwork: true,
    detached: true,
    diskHotplug: true,
  },
  version: qemuVersion,
  launch: (spec: VmmSpec) => QemuProcess.launch(qemuBackend, spec),
  detached: qemuDetached,
  program: { command: qemuBinary, missing: () => QEMU_MISSING },
  sandbox: { description: SANDBOX_DESCRIPTION, available: qemuHasSandbox },
};

/** QEMU's own version line; snapshots record it because migration streams are only safe between equal versions. */
export function qemuVersion(runtime: Runtime): Promise<string> {
  const binary = qemuBinary();
  return runtime.fact(`qemu-version:${binary}`, () =>
    runTool(binary, ['--version'], { timeoutMs: 30_000 }).then(
      (result) => result.stdout.split('\n')[0]?.trim() ?? 'unknown',
      (error: Error) => {
        throw new VmmStartError(`cannot run ${binary} --version: ${error.message.split('\n')[0]}`);
      },
    ),
  );
}

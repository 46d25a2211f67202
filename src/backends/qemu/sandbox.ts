import type { Runtime } from '../../runtime/runtime.js';
import { runTool } from '../../util/exec.js';
import { qemuBinary } from './process.js';

/** What SANDBOX_ARGS (devices.ts) apply, as reports name it. */
export const SANDBOX_DESCRIPTION =
  "QEMU's seccomp sandbox (obsolete system calls and resource control denied)";

/** Whether this host's QEMU was built with seccomp (it parses -sandbox before -version). */
export function qemuHasSandbox(runtime: Runtime): Promise<boolean> {
  return runtime.fact('qemu-sandbox', () =>
    runTool(qemuBinary(), ['-sandbox', 'on', '-version'], { timeoutMs: 10_000 }).then(
      () => true,
      () => false,
    ),
  );
}

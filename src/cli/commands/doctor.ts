import { chooseAccel } from '../../backends/accel.js';
import { qemuBinary } from '../../backends/qemu/process.js';
import { listImages } from '../../images/build.js';
import { defaultRuntime } from '../../runtime/runtime.js';
import { removeSnapshotLeftovers } from '../../snapshot/store.js';
import { runTool } from '../../util/exec.js';
import { cacheDir } from '../../util/paths.js';
import { which } from '../../util/which.js';

/** `vmkit doctor`: what vmkit needs and what it found. Returns 0 when machines can boot. */
export async function doctor(): Promise<number> {
  let problems = 0;
  const report = (ok: boolean, what: string, detail: string) => {
    if (!ok) problems++;
    process.stdout.write(`${ok ? 'ok  ' : 'FAIL'} ${what.padEnd(14)} ${detail}\n`);
  };
  const qemu = await which(qemuBinary());
  if (qemu) {
    const version = await runTool(qemu, ['--version'], { timeoutMs: 10_000 }).then(
      (r) => r.stdout.split('\n')[0] ?? '',
      (error: Error) => `cannot run: ${error.message}`,
    );
    report(true, 'qemu', `${qemu}: ${version}`);
  } else {
    report(false, 'qemu', `${qemuBinary()} not found on PATH (apt-get install qemu-system-x86)`);
  }
  const accel = await chooseAccel('auto');
  report(true, 'accelerator', `${accel.accel}: ${accel.reason}`);
  report(
    Boolean(await which('setpriv')),
    'setpriv',
    'ties QEMU to its parent so a killed run leaves no VM behind',
  );
  for (const tool of ['apt-get', 'dpkg-deb', 'depmod']) {
    report(Boolean(await which(tool)), tool, 'needed to build images from Debian packages');
  }
  const images = await listImages();
  report(
    images.length > 0,
    'images',
    images.length
      ? images.map((image) => `${image.name} (${image.key.slice(0, 12)})`).join(', ')
      : `none in ${cacheDir()} (vmkit image build tiny)`,
  );
  const runtime = defaultRuntime();
  const reaped = runtime.reap();
  const snapshots = await removeSnapshotLeftovers();
  report(
    true,
    'leftovers',
    `${reaped.runs} stale run folder(s) removed, ${reaped.killed} QEMU process(es) killed in ${runtime.runsRoot}; ` +
      `${reaped.files} RAM file(s) and ${snapshots.length} interrupted snapshot(s) removed`,
  );
  return problems === 0 ? 0 : 1;
}

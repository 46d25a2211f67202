import { chooseAccel, probeKvm } from '../../backends/accel.js';
import type { Backend } from '../../backends/backend.js';
import { backendNamed } from '../../backends/index.js';
import { listImages } from '../../images/build.js';
import { Runtime } from '../../runtime/runtime.js';
import { bootCacheCap, listBootCache } from '../../snapshot/boot-cache.js';
import { snapshotRoot } from '../../snapshot/manifest.js';
import { removeSnapshotLeftovers } from '../../snapshot/store.js';
import { cacheDir } from '../../util/paths.js';
import { toolPackage } from '../../util/tool-packages.js';
import { checkCgroups } from './doctor-cgroups.js';
import {
  type Check,
  checkAccel,
  checkSubids,
  checkTool,
  checkUserns,
  type ToolNeed,
} from './doctor-checks.js';
import {
  defaultLookup,
  readCgroupFacts,
  readSubidFacts,
  readUsernsFacts,
  type ToolLookup,
  who,
} from './doctor-facts.js';

const TOOLS: ToolNeed[] = [
  {
    name: 'setpriv',
    package: 'util-linux',
    purpose: 'ties QEMU to its parent so a killed run leaves no VM behind',
    required: true,
  },
  { name: 'qemu-img', package: 'qemu-utils', purpose: 'disk overlays and snapshots', required: true },
  ...['apt-get', 'dpkg-deb', 'depmod'].map((name) => ({
    name,
    package: name === 'depmod' ? 'kmod' : name === 'apt-get' ? 'apt' : 'dpkg',
    purpose: 'needed to build images from Debian packages',
    required: true,
  })),
  { name: 'mke2fs', package: 'e2fsprogs', purpose: 'makes the ext4 disks of Debian images', required: false },
  { name: 'mmdebstrap', package: 'mmdebstrap', purpose: 'builds Debian images on the host', required: false },
];

export interface DoctorOptions {
  json?: boolean;
  /** How tools are found (PATH, then the sbin folders). */
  lookup?: ToolLookup;
}

/** `vmkit doctor`: what vmkit needs, what it found, and the fix for what is missing. Returns 0 when machines can boot. */
export async function doctor(options: DoctorOptions = {}): Promise<number> {
  const lookup = options.lookup ?? defaultLookup;
  const checks: Check[] = [];
  const add = (check: Check) => {
    checks.push(check);
    if (!options.json) process.stdout.write(formatCheck(check));
  };
  const me = who();
  add({ status: 'ok', what: 'user', detail: `${me.user} (uid ${me.uid})${me.uid === 0 ? ', root' : ''}` });
  await using runtime = new Runtime();
  add(await vmmCheck(backendNamed(), lookup, runtime));
  const verdict = await runtime.fact('kvm-probe', () => probeKvm());
  add(checkAccel(await chooseAccel('auto', runtime).catch((error: Error) => error), verdict));
  for (const need of TOOLS) add(checkTool(need, await lookup(need.name)));
  add(checkUserns(await readUsernsFacts(lookup)));
  add(checkSubids(await readSubidFacts(lookup)));
  add(checkCgroups(await readCgroupFacts()));
  const images = await listImages();
  add({
    status: images.length > 0 ? 'ok' : 'fail',
    what: 'images',
    detail: images.length
      ? images.map((image) => `${image.name} (${image.key.slice(0, 12)})`).join(', ')
      : `none in ${cacheDir()}`,
    ...(images.length ? {} : { fix: 'vmkit image build tiny' }),
  });
  const booted = await listBootCache();
  const bootBytes = booted.reduce((sum, entry) => sum + entry.bytes, 0);
  add({
    status: 'ok',
    what: 'boot cache',
    detail:
      `${booted.length} saved first boot(s), ${(bootBytes / 2 ** 20).toFixed(0)} of at most ${(bootCacheCap() / 2 ** 20).toFixed(0)} MiB in ${snapshotRoot()}` +
      (process.env.VMKIT_BOOT_CACHE === 'off' ? '; off (VMKIT_BOOT_CACHE=off)' : ''),
  });
  const reaped = runtime.reap();
  const snapshots = await removeSnapshotLeftovers();
  add({
    status: 'ok',
    what: 'leftovers',
    detail:
      `${reaped.runs} stale run folder(s) removed, ${reaped.killed} QEMU process(es) killed in ${runtime.runsRoot}; ` +
      `${reaped.files} RAM file(s) and ${snapshots.length} interrupted snapshot(s) removed`,
  });
  const ok = checks.every((check) => check.status !== 'fail');
  if (options.json) process.stdout.write(`${JSON.stringify({ ok, checks }, null, 2)}\n`);
  return ok ? 0 : 1;
}

const TAGS = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' } as const;
const WIDTH = 15;

/** One line per check, and the fix on the next, under the detail. */
export function formatCheck(check: Check): string {
  const line = `${TAGS[check.status]} ${check.what.padEnd(WIDTH)} ${check.detail}\n`;
  return check.fix ? `${line}${' '.repeat(WIDTH + 6)}fix: ${check.fix}\n` : line;
}

/** The VMM's program: found, and its version. */
async function vmmCheck(backend: Backend, lookup: ToolLookup, runtime: Runtime): Promise<Check> {
  const command = backend.program?.command() ?? backend.name;
  const found = (await lookup(command)).path;
  if (!found) {
    return {
      status: 'fail',
      what: backend.name,
      detail: `${command} not found`,
      fix: toolPackage(command)
        ? `sudo apt-get install ${toolPackage(command)}`
        : (backend.program?.missing() ?? `install ${command}`),
    };
  }
  const version = await backend.version(runtime).catch((error: Error) => error.message);
  return { status: 'ok', what: backend.name, detail: `${found}: ${version}` };
}

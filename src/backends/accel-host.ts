import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { tail } from '../errors.js';
import { qemuBinary } from './qemu/process.js';

/** What decides whether KVM works here, gathered by a KvmHost (accel-host.ts) or given by a test. */
export interface KvmFacts {
  /** /dev/kvm: absent, present but not readable and writable by this process, or usable. */
  device: 'missing' | 'denied' | 'ok';
  /** Its owner group's name and mode bits, when present ("root", 0o600). */
  deviceGroup?: string;
  deviceMode?: number;
  /** The user running vmkit, and whether /etc/group lists it in deviceGroup (a new login may be due). */
  user: string;
  listedInDeviceGroup?: boolean;
  /** The CPU flags from /proc/cpuinfo. */
  cpuFlags: ReadonlySet<string>;
  /** Loaded kernel modules of interest (kvm, kvm_intel, kvm_amd, kvm_pvm). */
  modules: ReadonlySet<string>;
}

/** The result of running a tiny guest under KVM: bounded, so a hang is a failure, not a wait. */
export interface KvmProbeResult {
  ok: boolean;
  detail: string;
}

/** Where accelerator detection gets its inputs; tests hand in their own. */
export interface KvmHost {
  facts(): Promise<KvmFacts>;
  /** Runs a tiny guest under KVM; only called when the facts allow KVM. */
  probe(): Promise<KvmProbeResult>;
}

const KVM_MODULES = ['kvm', 'kvm_intel', 'kvm_amd', 'kvm_pvm'];

/** The flags of the first processor in /proc/cpuinfo. */
export function parseCpuFlags(cpuinfo: string): Set<string> {
  return new Set(
    cpuinfo
      .match(/^flags\s*:(.*)$/m)?.[1]
      ?.trim()
      .split(/\s+/)
      .filter(Boolean) ?? [],
  );
}

/** An /etc/group entry by gid: its name and the users it lists. */
export function groupEntry(etcGroup: string, gid: number): { name: string; members: string[] } | undefined {
  for (const line of etcGroup.split('\n')) {
    const [name, , id, members] = line.split(':');
    if (name && Number(id) === gid) return { name, members: (members ?? '').split(',').filter(Boolean) };
  }
  return undefined;
}

export function currentUser(): string {
  try {
    return userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`; // a uid without a passwd entry (containers)
  }
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

/** Reads the KVM facts of this machine. */
export async function readKvmFacts(): Promise<KvmFacts> {
  const user = currentUser();
  const cpuFlags = parseCpuFlags(await readFile('/proc/cpuinfo', 'utf8').catch(() => ''));
  const loaded = await Promise.all(KVM_MODULES.map((name) => exists(`/sys/module/${name}`)));
  const modules = new Set(KVM_MODULES.filter((_, index) => loaded[index]));
  const device = await stat('/dev/kvm').catch(() => undefined);
  if (!device) return { device: 'missing', user, cpuFlags, modules };
  const usable = await access('/dev/kvm', constants.R_OK | constants.W_OK).then(
    () => true,
    () => false,
  );
  const group = groupEntry(await readFile('/etc/group', 'utf8').catch(() => ''), device.gid);
  return {
    device: usable ? 'ok' : 'denied',
    deviceGroup: group?.name ?? `gid ${device.gid}`,
    deviceMode: device.mode & 0o7777,
    user,
    listedInDeviceGroup: group?.members.includes(user) ?? false,
    cpuFlags,
    modules,
  };
}

/**
 * Firmware of 64 KiB whose reset vector writes 0x31 to port 0xf4 and halts: with QEMU's
 * isa-debug-exit device there, QEMU exits with status (0x31 << 1) | 1 = 99 once a vCPU has run
 * guest code. It runs in real mode only, so it does not tell a nested PVM host from real KVM:
 * the facts do that first.
 */
function probeFirmware(): Buffer {
  const image = Buffer.alloc(64 * 1024, 0xf4); // hlt everywhere
  Buffer.from([0xb0, 0x31, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]).copy(image, 0xfff0); // mov al,0x31; out 0xf4,al; hlt; jmp -3
  return image;
}

const PROBE_EXIT = 99;

export interface AccelProbeOptions {
  qemu?: string;
  accel?: 'kvm' | 'tcg';
  timeoutMs?: number;
}

/** Runs the probe guest under `accel`, bounded by `timeoutMs`: a hang is a failure, and the QEMU is killed. */
export async function runAccelProbe(options: AccelProbeOptions = {}): Promise<KvmProbeResult> {
  const qemu = options.qemu ?? qemuBinary();
  const accel = options.accel ?? 'kvm';
  const timeoutMs = options.timeoutMs ?? 10_000;
  const dir = await mkdtemp(join(tmpdir(), 'vmkit-accel-probe-'));
  try {
    const firmware = join(dir, 'probe.bin');
    await writeFile(firmware, probeFirmware());
    const args = ['-accel', accel, '-machine', 'pc', '-nodefaults', '-no-user-config', '-display', 'none'];
    args.push('-m', '16', '-bios', firmware, '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x01');
    const started = Date.now();
    const outcome = await runBounded(qemu, args, timeoutMs);
    const ms = Date.now() - started;
    if (outcome.error) return { ok: false, detail: `cannot run ${qemu}: ${outcome.error}` };
    if (outcome.timedOut)
      return { ok: false, detail: `the test guest did not finish within ${timeoutMs} ms` };
    if (outcome.code === PROBE_EXIT)
      return { ok: true, detail: `QEMU ran a test guest under ${accel.toUpperCase()} in ${ms} ms` };
    const status = outcome.signal ? `signal ${outcome.signal}` : `status ${outcome.code}`;
    const said = tail(outcome.stderr.trim().replace(/\s*\n\s*/g, '; '), 300); // one line: it ends up in a log line
    return { ok: false, detail: `the test guest ended with ${status}${said ? `: ${said}` : ''}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface Bounded {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  timedOut: boolean;
  error?: string;
}

function runBounded(program: string, args: string[], timeoutMs: number): Promise<Bounded> {
  return new Promise((resolve) => {
    const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr: Buffer[] = [];
    let timedOut = false;
    let error: string | undefined;
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      error = e.message;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: Bounded = { code, signal, stderr: Buffer.concat(stderr).toString(), timedOut };
      resolve(error ? { ...result, error } : result);
    });
  });
}

/** This machine, as accelerator detection sees it. */
export function systemKvmHost(): KvmHost {
  return { facts: readKvmFacts, probe: () => runAccelProbe() };
}

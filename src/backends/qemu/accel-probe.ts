import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tail } from '../../errors.js';
import { qemuBinary } from './process.js';

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

/**
 * Runs the probe guest under `accel`, bounded by `timeoutMs`: a hang is a failure, and the QEMU is
 * killed. The result is a KvmProbeResult (accel-host.ts, which calls this).
 */
export async function runAccelProbe(
  options: AccelProbeOptions = {},
): Promise<{ ok: boolean; detail: string }> {
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

import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, VmkitError } from '../errors.js';
import { type AccelRequest, chooseAccel } from '../hypervisor/accel.js';
import { type QemuProcess, qemuVersion } from '../hypervisor/qemu.js';
import type { QmpClient } from '../hypervisor/qmp.js';
import type { BootImage } from '../image/types.js';
import { runTool } from '../util/exec.js';
import { cacheDir } from '../util/paths.js';
import { sparseDigest } from '../util/sparse.js';
import { sleep } from '../util/time.js';
import { type ConfigIdentity, configIdentity, type MachineConfig } from './config.js';
import { launchMachine } from './launch.js';
import { type Machine, type MachineInternals, shellQuote } from './machine.js';
import { DEFAULTS, type NetworkAttachment, validateName } from './options.js';
import { macAddress, ramFilePath, shouldKeepState } from './start.js';

export interface SnapshotOptions {
  /** Leave the machine paused instead of letting it run on (it is about to be discarded). */
  stop?: boolean;
  /**
   * For named snapshots: more data that identifies the guest state (e.g. a fingerprint of the
   * setup that produced it). Part of the snapshot's id, so a changed key never reuses an old one.
   */
  key?: unknown;
}

/** The id a named snapshot gets: its name plus a hash of the configuration (and key) it needs. */
export function snapshotId(name: string, identity: ConfigIdentity, key?: unknown): string {
  return `${validateSnapshotName(name)}-${hashOf(key === undefined ? identity : { identity, key }).slice(0, 12)}`;
}

export interface FileRecord {
  /** sparseDigest(): SHA-256 over the file's length and its non-zero blocks with their offsets. */
  digest: string;
  bytes: number;
}

/** What a snapshot folder holds, as written to its manifest.json. */
export interface SnapshotManifest {
  format: typeof SNAPSHOT_FORMAT;
  id: string;
  name: string;
  createdAt: string;
  /** The machine it was taken from. */
  source: string;
  identity: ConfigIdentity;
  image: BootImage;
  macs: string[];
  /** Guest RAM travels in the migration stream instead of a RAM file (snapshots of clones). */
  ramInStream: boolean;
  files: Record<string, FileRecord>;
}

/** Bumped whenever the layout of a snapshot folder changes. */
export const SNAPSHOT_FORMAT = 2;

export const snapshotRoot = () => join(cacheDir(), 'snapshots');

const MIGRATION_TIMEOUT_MS = 300_000;

/** A saved running machine: restore it, or fork it into independent clones. */
export class Snapshot {
  constructor(
    readonly manifest: SnapshotManifest,
    readonly dir: string,
  ) {}

  get id(): string {
    return this.manifest.id;
  }

  get name(): string {
    return this.manifest.name;
  }

  restore(options: RestoreOptions = {}): Promise<Machine> {
    return restoreMachine(this, options);
  }

  fork(count: number, options: ForkOptions = {}): Promise<Machine[]> {
    return forkMachines(this, count, options);
  }

  /** Clones restored ahead of demand: see RestorePool. */
  pool(options: PoolOptions = {}): RestorePool {
    return new RestorePool(this, options);
  }
}

/** Pause, save device state, RAM and disks into the store, run on. Called with the backdoor idle. */
export async function takeSnapshot(
  source: MachineInternals,
  name: string | undefined,
  options: SnapshotOptions,
): Promise<Snapshot> {
  const { vmm, config } = source;
  const identity = configIdentity(config, await qemuVersion());
  const label =
    name === undefined ? `${source.name}-${randomBytes(4).toString('hex')}` : validateSnapshotName(name);
  const id = name === undefined ? label : snapshotId(label, identity, options.key);
  const root = snapshotRoot();
  await mkdir(root, { recursive: true });
  const scratch = await mkdtemp(join(root, `.taking-${process.pid}-`));
  const ramInStream = !source.memory.share;
  const files: Record<string, FileRecord> = {};
  try {
    await vmm.qmp.execute('stop');
    try {
      await vmm.qmp.execute('migrate-set-capabilities', {
        capabilities: [{ capability: 'x-ignore-shared', state: !ramInStream }],
      });
      await vmm.qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(join(scratch, 'state'))}` });
      await waitForMigration(vmm.qmp, `saving ${source.name}`);
      if (!ramInStream) {
        // Copied sparse and digested in one pass: guest pages never touched take no room or time.
        const ram = await sparseDigest(await vmm.openFilePath(source.memory.path), join(scratch, 'ram'));
        files.ram = { digest: ram.digest, bytes: ram.bytes };
      }
      for (const [index, disk] of source.disks.entries()) {
        // Flattened, so the snapshot does not depend on whatever the disk was an overlay of.
        await runTool(
          'qemu-img',
          ['convert', '-U', '-O', 'qcow2', disk, join(scratch, `disk${index}.qcow2`)],
          {
            timeoutMs: MIGRATION_TIMEOUT_MS,
          },
        );
      }
    } finally {
      if (!options.stop && !vmm.hasExited) await vmm.qmp.execute('cont');
    }
    for (const file of ['state', ...source.disks.map((_, i) => `disk${i}.qcow2`)]) {
      const { digest, bytes } = await sparseDigest(join(scratch, file));
      files[file] = { digest, bytes };
    }
    const manifest: SnapshotManifest = {
      format: SNAPSHOT_FORMAT,
      id,
      name: label,
      createdAt: new Date().toISOString(),
      source: source.name,
      identity,
      image: config.image,
      macs: config.macs,
      ramInStream,
      files,
    };
    await writeFile(join(scratch, 'manifest.json'), JSON.stringify(manifest, null, 2));
    const dir = join(root, id);
    // Replace an older snapshot of the same name: clones running from it keep their open files.
    const old = existsSync(dir) ? `${dir}.old-${process.pid}-${randomBytes(3).toString('hex')}` : undefined;
    if (old) await rename(dir, old);
    await rename(scratch, dir);
    if (old) await rm(old, { recursive: true, force: true });
    verified.add(verificationKey(dir, manifest));
    return new Snapshot(manifest, dir);
  } catch (error) {
    await rm(scratch, { recursive: true, force: true });
    throw error instanceof VmkitError
      ? error
      : new VmkitError(`snapshot of ${source.name} failed: ${(error as Error).message}`);
  }
}

export interface RestoreOptions {
  /** Defaults to the name of the machine the snapshot was taken from. */
  name?: string;
  /** Switches for the snapshot's NICs, in order; with an address the NIC also gets a new MAC. */
  networks?: NetworkAttachment[];
  hosts?: Record<string, string>;
  /** Must agree with the snapshot when given. */
  memoryMiB?: number;
  cpus?: number;
  accel?: AccelRequest;
  timeoutMs?: number;
  commandTimeoutMs?: number;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

/** Starts a fresh QEMU from a snapshot; resolves when the backdoor answers. */
export async function restoreMachine(snapshot: Snapshot, options: RestoreOptions = {}): Promise<Machine> {
  const { manifest, dir } = snapshot;
  const name = validateName(options.name ?? manifest.source);
  await checkRestorable(snapshot, options);
  const accel = await chooseAccel(options.accel ?? 'auto');
  const networks = options.networks ?? [];
  const config: MachineConfig = {
    image: manifest.image,
    memoryMiB: manifest.identity.memoryMiB,
    cpus: manifest.identity.cpus,
    accel: manifest.identity.accel,
    nics: manifest.identity.nics,
    macs: manifest.macs,
    disks: manifest.identity.disks.map((sizeMiB) => ({ sizeMiB })),
    qemuArgs: manifest.identity.qemuArgs,
  };
  const timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs;
  return launchMachine({
    name,
    config,
    accel,
    switches: manifest.macs.map((_, index) => networks[index]?.switch),
    timeoutMs,
    commandTimeoutMs: options.commandTimeoutMs ?? DEFAULTS.commandTimeoutMs,
    keepState: shouldKeepState,
    log: options.log ?? (() => {}),
    signal: options.signal,
    incoming: true,
    verb: `restored from snapshot ${manifest.id}`,
    async prepare(stateDir) {
      const disks: string[] = [];
      for (const index of manifest.identity.disks.keys()) {
        const overlay = join(stateDir, `disk${index}.qcow2`);
        const base = join(dir, `disk${index}.qcow2`);
        await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, overlay]);
        disks.push(overlay);
      }
      const memory = manifest.ramInStream
        ? { path: ramFilePath(stateDir, name), share: true }
        : { path: join(dir, 'ram'), share: false }; // copy-on-write: clones share what they only read
      return { memory, disks };
    },
    async ready(vmm, backdoor) {
      await migrateIn(vmm, join(dir, 'state'), !manifest.ramInStream, timeoutMs);
      backdoor.assumeBannerSeen();
    },
    setupScript: restoreScript(name, manifest, options),
  });
}

export interface ForkOptions extends Omit<RestoreOptions, 'name'> {
  /** Clone names; default <source>-1, <source>-2, ... */
  names?: string[];
}

/** Starts `count` independent clones of a snapshot at once. All start, or none is left running. */
export async function forkMachines(
  snapshot: Snapshot,
  count: number,
  options: ForkOptions = {},
): Promise<Machine[]> {
  if (!Number.isInteger(count) || count < 1)
    throw new ConfigError(`fork count must be a whole number >= 1, not ${count}`);
  const names =
    options.names ?? Array.from({ length: count }, (_, i) => `${snapshot.manifest.source}-${i + 1}`);
  if (names.length !== count) throw new ConfigError(`fork got ${names.length} names for ${count} clones`);
  const results = await Promise.allSettled(
    names.map((name) => restoreMachine(snapshot, { ...options, name })),
  );
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  const machines = results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  if (failed) {
    await Promise.allSettled(machines.map((machine) => machine.close()));
    throw failed.reason;
  }
  return machines;
}

/** Refuses snapshots this host cannot restore faithfully, with the reason. */
async function checkRestorable(snapshot: Snapshot, options: RestoreOptions): Promise<void> {
  const { manifest } = snapshot;
  if (manifest.format !== SNAPSHOT_FORMAT) {
    throw new ConfigError(
      `snapshot ${manifest.id} was made by another vmkit version (format ${manifest.format}): take it again`,
    );
  }
  const here = await qemuVersion();
  if (manifest.identity.qemuVersion !== here) {
    throw new ConfigError(
      `snapshot ${manifest.id} was taken with "${manifest.identity.qemuVersion}" but this is "${here}": take it again`,
    );
  }
  for (const [what, wanted, actual] of [
    ['memoryMiB', options.memoryMiB, manifest.identity.memoryMiB],
    ['cpus', options.cpus, manifest.identity.cpus],
  ] as const) {
    if (wanted !== undefined && wanted !== actual) {
      throw new ConfigError(
        `snapshot ${manifest.id} has ${what} ${actual}; it cannot be restored with ${wanted}`,
      );
    }
  }
  const accel = await chooseAccel(options.accel ?? 'auto');
  if (accel.accel !== manifest.identity.accel) {
    throw new ConfigError(
      `snapshot ${manifest.id} was taken under ${manifest.identity.accel}; this restore would use ${accel.accel} (${accel.reason})`,
    );
  }
  if ((options.networks?.length ?? 0) > manifest.identity.nics) {
    throw new ConfigError(
      `snapshot ${manifest.id} has ${manifest.identity.nics} NIC(s); ${options.networks?.length} networks were given`,
    );
  }
  for (const file of [manifest.image.kernel, manifest.image.initrd]) {
    if (!existsSync(file))
      throw new ConfigError(`snapshot ${manifest.id} needs ${file}, which is gone (image removed?)`);
  }
  await verifySnapshotFiles(snapshot);
}

const verified = new Set<string>();
const verificationKey = (dir: string, manifest: SnapshotManifest) => `${dir}\0${manifest.createdAt}`;

/**
 * Checks every file against its recorded size and SHA-256. The RAM file is large, so a snapshot
 * verified once stays verified for this process while its files' sizes are unchanged.
 */
export async function verifySnapshotFiles(snapshot: Snapshot): Promise<void> {
  const { manifest, dir } = snapshot;
  const key = verificationKey(dir, manifest);
  const fullCheck = !verified.has(key);
  for (const [file, record] of Object.entries(manifest.files)) {
    const path = join(dir, file);
    const size = await stat(path).then(
      (s) => s.size,
      () => -1,
    );
    if (size !== record.bytes) {
      throw new ConfigError(
        `snapshot ${manifest.id} is damaged: ${file} has ${size < 0 ? 'gone missing' : `${size} bytes, not ${record.bytes}`}`,
      );
    }
    if (file === 'ram' && !fullCheck) continue;
    const { digest } = await sparseDigest(path);
    if (digest !== record.digest)
      throw new ConfigError(`snapshot ${manifest.id} was tampered with: ${file} does not match its checksum`);
  }
  verified.add(key);
}

/** Loads the device state (and RAM, unless it is in a mapped file) into a QEMU started with -incoming defer. */
async function migrateIn(
  vmm: QemuProcess,
  statePath: string,
  ignoreShared: boolean,
  timeoutMs: number,
): Promise<void> {
  if (ignoreShared) {
    await vmm.qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
  }
  await vmm.qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(statePath)}` });
  await waitForMigration(vmm.qmp, `loading ${statePath}`, timeoutMs);
  await vmm.qmp.execute('cont');
}

/** Polls query-migrate until the migration completed; fails with QEMU's reason otherwise. */
async function waitForMigration(
  qmp: QmpClient,
  what: string,
  timeoutMs = MIGRATION_TIMEOUT_MS,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let status = 'none';
  while (performance.now() < deadline) {
    const info = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
    status = info.status ?? 'none';
    if (status === 'completed') return;
    if (status === 'failed' || status === 'cancelled') {
      throw new VmkitError(`migration ${what} ${status}: ${info['error-desc'] ?? 'QEMU gave no reason'}`);
    }
    await sleep(5);
  }
  throw new VmkitError(`migration ${what} did not complete within ${timeoutMs} ms (last status: ${status})`);
}

/** Clock, identity and entropy of a restored guest, then its network. */
function restoreScript(name: string, manifest: SnapshotManifest, options: RestoreOptions): string {
  const lines = [
    `date -s @${Math.floor(Date.now() / 1000)} > /dev/null`,
    // Every program started costs under emulation: the hostname is set only when it changes.
    ...(name === manifest.source ? [] : [`hostname ${shellQuote(name)}`]),
    // Clones must not share the random state they were saved with.
    `printf '%s' ${randomBytes(64).toString('hex')} > /dev/urandom`,
  ];
  (options.networks ?? []).forEach((network, index) => {
    if (!network.address) return;
    lines.push(
      `ip link set eth${index} down`,
      `ip link set eth${index} address ${macAddress(`${name}/${manifest.id}`, index)}`,
      `ip addr flush dev eth${index}`,
      `ip addr add ${shellQuote(network.address)} dev eth${index}`,
      `ip link set eth${index} up`,
    );
  });
  for (const [host, address] of Object.entries(options.hosts ?? {})) {
    lines.push(`echo ${shellQuote(`${address} ${host}`)} >> /etc/hosts`);
  }
  return lines.join('\n');
}

const SNAPSHOT_NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

function validateSnapshotName(name: string): string {
  if (!SNAPSHOT_NAME.test(name)) {
    throw new ConfigError(`invalid snapshot name ${JSON.stringify(name)}: use 1 to 64 of a-z 0-9 . _ -`);
  }
  return name;
}

export function hashOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

export interface PoolOptions extends Omit<RestoreOptions, 'name' | 'signal'> {
  /** How many restored clones to keep ready (default 1). */
  size?: number;
  /** Clone names are <prefix>-1, <prefix>-2, ...; default the snapshot's source machine. */
  prefix?: string;
}

/**
 * Keeps clones of a snapshot restored and running ahead of demand, so that take() hands one
 * out at once and the emulator's warm-up after a restore is already paid. Every clone gets the
 * same options: give networks only when clones may share them (no fixed addresses).
 */
export class RestorePool implements AsyncDisposable {
  private readonly ready: Array<Promise<Machine>> = [];
  private readonly aborter = new AbortController();
  private count = 0;
  private closed = false;

  constructor(
    readonly snapshot: Snapshot,
    private readonly options: PoolOptions = {},
  ) {
    const size = options.size ?? 1;
    if (!Number.isInteger(size) || size < 1)
      throw new ConfigError(`pool size must be a whole number >= 1, not ${size}`);
    for (let i = 0; i < size; i++) this.ready.push(this.restoreOne());
  }

  /** A running clone, restored in advance when the pool had one; the pool refills behind it. */
  async take(): Promise<Machine> {
    if (this.closed) throw new VmkitError(`the pool of ${this.snapshot.id} is closed`);
    const next = this.ready.shift() ?? this.restoreOne();
    this.ready.push(this.restoreOne());
    const clone = await next;
    if (clone.isRunning) return clone;
    // It died while waiting (killed from outside, out of memory): hand out a fresh one instead.
    await clone.close();
    return this.restoreOne();
  }

  /** Resolves once the next take() can hand out a clone at once (rejects if that clone failed). */
  async whenReady(): Promise<void> {
    await this.ready[0];
  }

  /** Stops the clones waiting in the pool; clones already taken are the caller's. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.aborter.abort();
    const waiting = await Promise.allSettled(this.ready.splice(0));
    await Promise.allSettled(
      waiting.flatMap((result) => (result.status === 'fulfilled' ? [result.value.close()] : [])),
    );
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private restoreOne(): Promise<Machine> {
    const { size: _size, prefix, ...restore } = this.options;
    const name = `${prefix ?? this.snapshot.manifest.source}-${++this.count}`;
    const clone = restoreMachine(this.snapshot, { ...restore, name, signal: this.aborter.signal });
    clone.catch(() => {}); // reported to whoever takes it
    return clone;
  }
}

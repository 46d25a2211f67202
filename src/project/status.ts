import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import type { ProjectConfig } from './config.js';
import { listProjectSnapshots } from './snapshots.js';
import { dataDisk, readState } from './state.js';
import { consoleTail, projectVm, vmmRecord } from './vmm.js';

export interface VmStatus {
  name: string;
  state: 'running' | 'stopped' | 'crashed' | 'absent';
  pid?: number;
  uptimeSeconds?: number;
  address: string;
  /** Host port (on 127.0.0.1) by guest port. */
  ports: Record<string, number>;
  diskBytes: number;
  snapshots: string[];
  /** For a crashed VM: the end of its console. */
  consoleTail?: string;
}

function bytesUnder(path: string): number {
  if (!existsSync(path)) return 0;
  const stats = statSync(path);
  if (!stats.isDirectory()) return stats.blocks * 512;
  return readdirSync(path).reduce((sum, name) => sum + bytesUnder(join(path, name)), 0);
}

export function vmStatus(project: ProjectConfig, name: string): VmStatus {
  const vm = project.vms[name];
  if (!vm) throw new ConfigError(`no VM ${name} in the project`);
  const pvm = projectVm(project, vm);
  const state = readState(pvm.dir);
  const record = vmmRecord(pvm);
  const status: VmStatus = {
    name,
    // Made once its data disk is: a first `up` refused early leaves at most an empty folder.
    state: record
      ? 'running'
      : state.running
        ? 'crashed'
        : existsSync(dataDisk(pvm.dir))
          ? 'stopped'
          : 'absent',
    address: '127.0.0.1',
    ports: state.ports,
    diskBytes: bytesUnder(pvm.dir),
    snapshots: listProjectSnapshots(pvm).map((snapshot) => snapshot.label),
  };
  if (record) {
    status.pid = record.pid;
    status.uptimeSeconds = Math.round((Date.now() - Date.parse(record.startedAt)) / 1000);
  }
  if (status.state === 'crashed') status.consoleTail = consoleTail(pvm, 800);
  return status;
}

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

export function formatStatus(status: VmStatus): string {
  const ports = Object.entries(status.ports)
    .map(([guest, host]) => `${status.address}:${host}->${guest}`)
    .join(', ');
  const parts = [
    `${status.name}: ${status.state}`,
    status.uptimeSeconds === undefined ? undefined : `up ${status.uptimeSeconds} s (pid ${status.pid})`,
    ports ? `ports ${ports}` : undefined,
    `disk ${mib(status.diskBytes)}`,
    `snapshots: ${status.snapshots.join(', ') || 'none'}`,
  ];
  const line = parts.filter(Boolean).join('; ');
  return status.consoleTail
    ? `${line}\n  QEMU died; console tail:\n${status.consoleTail.replace(/^/gm, '    ')}`
    : line;
}

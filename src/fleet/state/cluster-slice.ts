import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensurePrivateDir, PRIVATE_FILE } from '../../util/private.js';
import type { AddressSlice } from './subnet.js';

/** Where a fleet that is a cluster node keeps its part of the tenant subnets. */
const sliceFile = (fleetDir: string) => join(fleetDir, 'cluster-node.json');

/** The address slice of a fleet that joined a cluster (see AddressSlice); undefined for a lone fleet. */
export function clusterSliceOf(fleetDir: string): AddressSlice | undefined {
  try {
    const { index, of } = JSON.parse(readFileSync(sliceFile(fleetDir), 'utf8')) as AddressSlice;
    return Number.isInteger(index) && Number.isInteger(of) && index >= 0 && index < of
      ? { index, of }
      : undefined;
  } catch {
    return undefined;
  }
}

/** Records the fleet's slice as a cluster node `node` (through a rename: never half written). */
export function recordClusterSlice(fleetDir: string, node: string, slice: AddressSlice): void {
  ensurePrivateDir(fleetDir); // a new node: before its fleet's database
  writeWhole(sliceFile(fleetDir), JSON.stringify({ node, ...slice }));
}

/** Writes a file of the fleet folder through a rename: never half written. */
function writeWhole(file: string, text: string): void {
  writeFileSync(`${file}.part`, text, { mode: PRIVATE_FILE });
  renameSync(`${file}.part`, file);
}

const agentIdFile = (fleetDir: string) => join(fleetDir, 'cluster-agent-id');

/**
 * The id of the agent that serves this fleet folder as a cluster node, made once and kept: a
 * restart of the same agent takes its node's record over, another agent under the same node
 * name is refused.
 */
export function clusterAgentId(fleetDir: string): string {
  const file = agentIdFile(fleetDir);
  try {
    const id = readFileSync(file, 'utf8').trim();
    if (/^[0-9a-f]{16}$/.test(id)) return id;
  } catch {}
  ensurePrivateDir(fleetDir);
  const id = randomBytes(8).toString('hex');
  writeWhole(file, id);
  return id;
}

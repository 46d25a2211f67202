import { createReadStream, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ClusterError } from '../../errors.js';
import { ensureDirSync } from '../../util/files.js';
import { parseInput } from '../../util/validate.js';
import type { Exclusive } from '../agent/server.js';
import type { Fleet } from '../fleet.js';
import { TRAVEL_FILES } from '../snapshots/move-state.js';
import { parseAddress } from '../state/ids.js';
import { RefusedError } from '../state/lifecycle.js';
import { clearStaleCopy } from './copies.js';
import { type ClusterStore, clusterCall } from './etcd.js';
import { downloadChecked } from './peer.js';
import { applyPlacement } from './placement.js';
import { desiredSlots, type Slot } from './slots.js';
import { bookedOn, readCluster } from './state.js';
import type { TunnelTls } from './tunnel.js';

/**
 * The two ends of a move with state on the agents' API. The node the instance leaves packs its
 * sleep state into `<fleet>/moves/out/<id>/` and serves it (GET /v1/cluster/departures/<id>/<file>);
 * then it asks the node it goes to (POST /v1/cluster/arrivals), which downloads the files, checks
 * their digests, makes the instance from them, wakes it as its slot says, and flips the slot in
 * etcd: only then is the move done, and the node it left destroys its copy (departures.ts).
 */

export const departureDir = (fleetDir: string, id: string) => join(fleetDir, 'moves', 'out', id);
const arrivalDir = (fleetDir: string, id: string) => join(fleetDir, 'moves', 'in', id);
const MOVE_ID = /^[0-9a-f]{16}$/;

export const arrivalRequest = z
  .object({
    slot: z.string().max(200),
    departure: z.string().regex(MOVE_ID),
    instance: z.object({ path: z.string().max(100), address: z.string().max(64) }).strict(),
    files: z
      .array(
        z
          .object({
            name: z.enum(TRAVEL_FILES),
            bytes: z.number().int().nonnegative(),
            sha256: z.string().regex(/^[0-9a-f]{64}$/),
          })
          .strict(),
      )
      .min(TRAVEL_FILES.length - 1)
      .max(TRAVEL_FILES.length)
      .refine((files) => TRAVEL_FILES.slice(0, 3).every((name) => files.some((file) => file.name === name)), {
        error: 'needs the state, the RAM and the data disk',
      })
      .refine((files) => new Set(files.map((file) => file.name)).size === files.length, {
        error: 'names a file twice',
      }),
  })
  .strict();
export type ArrivalRequest = z.infer<typeof arrivalRequest>;

export interface MoveRoutesOptions {
  store: ClusterStore;
  node: string;
  fleetDir: string;
  tls: TunnelTls;
  log: (line: string) => void;
}

/** The routes of a cluster node's moves (startAgent's `routes`). */
export function moveRoutes(options: MoveRoutesOptions) {
  return (app: FastifyInstance, fleet: Fleet, exclusive: Exclusive) => {
    app.get<{ Params: { id: string; file: string } }>(
      '/v1/cluster/departures/:id/:file',
      async (request, reply) => {
        const { id, file } = request.params;
        const path = join(departureDir(options.fleetDir, id), file);
        if (!MOVE_ID.test(id) || !(TRAVEL_FILES as readonly string[]).includes(file) || !existsSync(path))
          return reply.status(404).send({ error: `no departure file ${id}/${file} here`, statusCode: 404 });
        return reply.type('application/octet-stream').send(createReadStream(path));
      },
    );
    app.post('/v1/cluster/arrivals', async (request) =>
      arrive(options, fleet, exclusive, parseInput(arrivalRequest, request.body, 'arrival')),
    );
  };
}

/** Takes in an instance that another node moves here (see above); resolves once its slot is here. */
async function arrive(options: MoveRoutesOptions, fleet: Fleet, exclusive: Exclusive, body: ArrivalRequest) {
  const { store, node } = options;
  const state = await clusterCall(store, `reading the move of ${body.slot}`, () => readCluster(store));
  const asked = state.moves.get(body.slot);
  if (!asked || asked.value.to !== node || asked.value.failed)
    throw new RefusedError(`no move of slot ${body.slot} to node ${node} is asked in the cluster`);
  const from = state.nodes.get(asked.value.from);
  if (!from) throw new ClusterError(`node ${asked.value.from}, which ${body.slot} moves from, is not alive`);
  const slot = state.desired && desiredSlots(state.desired.doc).find((s) => s.id === body.slot);
  const { tenant, pool, instance: id } = parseAddress(body.instance.path, 3);
  if (!slot || slot.pool !== pool || slot.tenant !== tenant)
    throw new RefusedError(`instance ${body.instance.path} does not fill slot ${body.slot}`);
  const inDir = arrivalDir(options.fleetDir, body.departure);
  rmSync(inDir, { recursive: true, force: true });
  ensureDirSync(inDir, 0o700);
  try {
    const started = Date.now();
    const departures = (name: string) => `/v1/cluster/departures/${body.departure}/${name}`;
    await downloadChecked(from.value.advertise, departures, body.files, inDir, options.tls);
    const bytes = body.files.reduce((sum, file) => sum + file.bytes, 0);
    options.log(
      `move: ${body.instance.path} arrived from ${from.value.name}: ${bytes} bytes in ${Date.now() - started} ms, digests checked`,
    );
    return await exclusive(async () => {
      await clearStaleCopy(fleet, body.instance.path, options.log);
      const arrived = await fleet.arrive(`${tenant}/${pool}`, id, inDir, body.instance.address);
      try {
        let now = arrived;
        if (slot.kind !== 'sleeping') now = await fleet.wake(arrived.path);
        if (slot.kind === 'warm') now = await fleet.warm(arrived.path);
        await flipSlot(store, node, slot, asked.value.from, asked.modRevision, options.log);
        return { path: now.path, state: now.state, node };
      } catch (error) {
        await fleet.destroy(arrived.path).catch(() => undefined);
        throw error;
      }
    }, 60_000);
  } finally {
    rmSync(inDir, { recursive: true, force: true });
  }
}

/**
 * Places `slot` here, from the node it moved from, in one transaction with the removal of its
 * move record (as read at the arrival: a move its source called off meanwhile is not flipped),
 * and only while this node has room for it. Tried again while other slots' changes get between.
 */
async function flipSlot(
  store: ClusterStore,
  node: string,
  slot: Slot,
  from: string,
  moveRevision: string,
  log: (line: string) => void,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const state = await clusterCall(store, `placing ${slot.id} on ${node}`, () => readCluster(store));
    if (state.moves.get(slot.id)?.modRevision !== moveRevision)
      throw new ClusterError(`the move of ${slot.id} to ${node} was called off (its record changed)`);
    const placed = state.slots.get(slot.id)?.value;
    if (placed?.node !== from) throw new ClusterError(`slot ${slot.id} is no longer on ${from}`);
    const capacity = state.nodes.get(node)?.value.capacity.memoryMiB ?? 0;
    if (bookedOn(state, node) + slot.memoryMiB > capacity)
      throw new ClusterError(`node ${node} has no room for ${slot.id} (${slot.memoryMiB} MiB) any more`);
    const round = await applyPlacement(
      store,
      state,
      {
        moves: [
          {
            kind: 'place',
            slot,
            to: node,
            from,
            previousMiB: placed.memoryMiB,
            reason: 'moved with its state',
            moveRevision,
          },
        ],
        unplaced: [],
        requests: [],
        stale: [],
      },
      (line) => log(`move: ${line}`),
    );
    if (round.placed === 1) return;
    if (attempt === 5)
      throw new ClusterError(`slot ${slot.id} could not be placed on ${node}: the cluster kept changing`);
  }
}

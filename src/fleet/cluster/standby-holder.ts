import { createReadStream, existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ClusterError } from '../../errors.js';
import { ensureDirSync } from '../../util/files.js';
import { parseInput } from '../../util/validate.js';
import { TRAVEL_FILES } from '../snapshots/move-state.js';
import { parseAddress } from '../state/ids.js';
import { arrivalRequest, type MoveRoutesOptions } from './arrivals.js';
import { clusterCall } from './etcd.js';
import { downloadChecked } from './peer.js';
import { type ClusterState, readCluster } from './state.js';

/**
 * The node that keeps other nodes' standby copies (standby.ts): it downloads a copy when its
 * owner offers one (POST /v1/cluster/standbys), serves it to the node that adopts it
 * (GET /v1/cluster/standbys/<tenant>/<pool>/<id>/<file>), and removes the copies no record in
 * etcd names it the holder of.
 */

/** Where the copy of `path`'s sleep state is kept. */
export const standbyDir = (fleetDir: string, path: string) => join(fleetDir, 'standby', ...path.split('/'));
/** A copy is removed once no record names it for this long (a record is written just after its copy). */
const UNCLAIMED_GRACE_MS = 60_000;

const standbyOffer = arrivalRequest.pick({ departure: true, files: true }).extend({
  path: z.string().max(100),
  owner: z.string().max(64),
});

/** The routes of a node that keeps standby copies (startAgent's `routes`). */
export function standbyRoutes(options: MoveRoutesOptions) {
  return (app: FastifyInstance) => {
    app.post('/v1/cluster/standbys', async (request) => {
      const offer = parseInput(standbyOffer, request.body, 'standby offer');
      const { tenant, pool, instance } = parseAddress(offer.path, 3);
      const path = `${tenant}/${pool}/${instance}`;
      const state = await clusterCall(options.store, `reading node ${offer.owner}`, () =>
        readCluster(options.store),
      );
      const owner = state.nodes.get(offer.owner);
      if (!owner) throw new ClusterError(`node ${offer.owner}, which offers ${path}'s copy, is not alive`);
      const dir = standbyDir(options.fleetDir, path);
      const part = `${dir}.part-${offer.departure}`;
      rmSync(part, { recursive: true, force: true });
      ensureDirSync(part, 0o700);
      try {
        const departures = (name: string) => `/v1/cluster/departures/${offer.departure}/${name}`;
        await downloadChecked(owner.value.advertise, departures, offer.files, part, options.tls);
        rmSync(dir, { recursive: true, force: true });
        renameSync(part, dir);
      } finally {
        rmSync(part, { recursive: true, force: true });
      }
      return { path, holder: options.node };
    });
    app.get<{ Params: { tenant: string; pool: string; id: string; file: string } }>(
      '/v1/cluster/standbys/:tenant/:pool/:id/:file',
      async (request, reply) => {
        const { tenant, pool, id, file } = request.params;
        const { instance } = parseAddress(`${tenant}/${pool}/${id}`, 3);
        const path = join(standbyDir(options.fleetDir, `${tenant}/${pool}/${instance}`), file);
        if (!(TRAVEL_FILES as readonly string[]).includes(file) || !existsSync(path))
          return reply
            .status(404)
            .send({ error: `no standby copy of ${tenant}/${pool}/${id} here`, statusCode: 404 });
        return reply.type('application/octet-stream').send(createReadStream(path));
      },
    );
  };
}

/** Removes the copies (and half-downloaded ones) that no record names this node the holder of. */
export function removeUnclaimedStandbys(fleetDir: string, node: string, state: ClusterState): void {
  const root = join(fleetDir, 'standby');
  const entries = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);
  for (const tenant of entries(root))
    for (const pool of entries(join(root, tenant)))
      for (const name of entries(join(root, tenant, pool))) {
        const dir = join(root, tenant, pool, name);
        const id = name.replace(/\.part-[0-9a-f]+$/, '');
        if (state.standbys.get(`${tenant}/${pool}/${id}`)?.value.holder === node && id === name) continue;
        if (Date.now() - statSync(dir).mtimeMs < UNCLAIMED_GRACE_MS) continue;
        rmSync(dir, { recursive: true, force: true });
      }
}

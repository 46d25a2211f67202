import { buildInVm } from '../../builder/vm-builder.js';
import { buildImage } from '../../images/build.js';
import type { BootImage } from '../../images/types.js';
import type { Runtime } from '../../runtime/runtime.js';
import { currentActor } from '../state/audit.js';
import type { Pool } from '../state/model.js';
import type { BuildRecord } from './builds.js';
import { isDerived, type PoolImage } from './image-spec.js';

/**
 * Where the fleet builds recipe images: in an ephemeral builder VM (the default), or on the host
 * with mmdebstrap (root). The VM is the default even as root: a recipe's `run` steps and its
 * packages' scripts are a tenant's code, and a chroot on the host is no boundary for root.
 */
export type FleetBuilder = 'vm' | 'host';
export const FLEET_BUILDERS = ['vm', 'host'] as const;

/** The image a pool names: its recipe, or its image name. */
export const imageOf = (pool: Pool): PoolImage => pool.recipe ?? pool.image;

export interface BuiltPoolImage {
  image: BootImage;
  /** What the pool's build history records about it. */
  build: BuildRecord;
}

/** Builds (or finds in the store) a pool's image; a derived recipe goes through `builder`. */
export async function buildPoolImage(
  image: PoolImage,
  options: { runtime?: Runtime; builder?: FleetBuilder; onProgress?: (line: string) => void },
): Promise<BuiltPoolImage> {
  const started = new Date();
  const common = {
    ...(options.runtime ? { runtime: options.runtime } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  };
  const built =
    isDerived(image) && (options.builder ?? 'vm') === 'vm'
      ? await buildInVm(image, common)
      : await buildImage(image, common);
  const build: BuildRecord = {
    revision: built.key,
    image: typeof image === 'string' ? image : image.name,
    actor: currentActor(),
    ...(built.builder ? { builder: built.builder } : {}),
    ...(built.buildMs !== undefined ? { buildMs: built.buildMs } : {}),
    ...(built.builtAt ? { imageBuiltAt: built.builtAt } : {}),
    cached: !built.builtAt || new Date(built.builtAt) < started,
  };
  return { image: built, build };
}

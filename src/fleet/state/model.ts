import { z } from 'zod';
import type { ImageRecipe, ResolvedRecipe } from '../../images/recipe.js';
import { wholeNumber } from '../../util/validate.js';
import { imageOrRecipe } from '../images/image-spec.js';
import { fleetId } from './ids.js';
import type { InstanceState } from './lifecycle.js';

export const tenantInput = z
  .object({
    id: fleetId,
    subnet: z.string({ error: 'must be a CIDR like 10.20.0.0/24' }),
    maxVcpus: wholeNumber(1, 4096).default(8),
    maxMemoryMiB: wholeNumber(16, 16 * 1024 * 1024).default(4096),
    maxRunning: wholeNumber(0, 10_000).default(8),
    maxWarm: wholeNumber(0, 10_000).default(8),
    maxInstances: wholeNumber(0, 10_000).default(16),
    maxDiskMiB: wholeNumber(0, 1024 * 1024 * 1024).default(65_536),
    secrets: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/), z.string()).default({}),
    /** Outbound access for its instances through QEMU user-mode networking (a NIC of its own). */
    outbound: z.boolean().default(false),
  })
  .strict();
export type TenantInput = z.input<typeof tenantInput>;

export interface Tenant {
  id: string;
  subnet: string;
  gateway: string;
  quotas: {
    maxVcpus: number;
    maxMemoryMiB: number;
    maxRunning: number;
    maxWarm: number;
    /** Per pool. */
    maxInstances: number;
    maxDiskMiB: number;
  };
  secrets: Record<string, string>;
  /** Its instances reach outside addresses through a user-mode NIC (eth2); fixed at creation. */
  outbound: boolean;
  /** The uid (and gid) its jailed VMMs run as: allocateTenantUid, unique in the fleet. */
  uid: number;
  createdAt: string;
}

export const poolInput = z
  .object({
    tenant: fleetId,
    id: fleetId,
    /** An image name, or a recipe (src/images/recipe.ts) whose build is the pool's image. */
    image: imageOrRecipe(
      z
        .string({ error: 'must be an image name like "tiny" or a recipe object' })
        .regex(/^[a-z0-9][a-z0-9-]{0,31}$/, {
          error: 'must be an image name like "tiny"',
        }),
    ).default('tiny'),
    vcpus: wholeNumber(1, 64).default(1),
    memoryMiB: wholeNumber(64, 65_536).default(128),
    dataDiskMiB: wholeNumber(1, 1024 * 1024).default(16),
    running: wholeNumber(0, 1000).default(0),
    warm: wholeNumber(0, 1000).default(0),
    sleeping: wholeNumber(0, 1000).default(0),
    /** Refuse to run an instance whose memory, cpu and pids limits cannot all be applied. */
    requireLimits: z.boolean().default(false),
  })
  .strict();
export type PoolInput = Omit<z.input<typeof poolInput>, 'image'> & { image?: string | ImageRecipe };

export interface Pool {
  tenant: string;
  id: string;
  /** The image's name (a recipe's name for a recipe pool). */
  image: string;
  /** The recipe the pool's image is built from, when it has one (checked, defaults filled in). */
  recipe?: ResolvedRecipe;
  vcpus: number;
  memoryMiB: number;
  dataDiskMiB: number;
  desired: { running: number; warm: number; sleeping: number };
  /** Its instances are refused where their cgroup limits cannot all be applied (else: a warning). */
  requireLimits: boolean;
  /** The image's content key when the pool was (re)built. */
  revision: string;
  createdAt: string;
}

/** An operation in flight: recorded before its first side effect, cleared when it is done. */
export interface Intent {
  operation: string;
  from: InstanceState;
  /** The CLI process carrying it out, with its start time (a recycled pid is not it). */
  pid: number;
  ticks: string;
  at: string;
}

export interface Instance {
  seq: number;
  tenant: string;
  pool: string;
  id: string;
  path: string;
  state: InstanceState;
  address: string;
  mac: string;
  revision: string;
  pinned: boolean;
  critical: boolean;
  /** The VMM's pid and start time while one runs. */
  pid?: number;
  pidTicks?: string;
  /** Why the instance is in its state, when something other than a request put it there. */
  reason?: string;
  /** What could not be applied at its last start or wake (resource limits). */
  warnings: string[];
  createdAt: string;
  updatedAt: string;
  startedAt?: string;
  lastActiveAt?: string;
  intent?: Intent;
}

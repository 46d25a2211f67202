import type { DesiredDocument } from '../desired/schema.js';

/** What a slot holds: an instance Running, Warm or Sleeping, as the document's counts say. */
export const SLOT_KINDS = ['running', 'warm', 'sleeping'] as const;
export type SlotKind = (typeof SLOT_KINDS)[number];

/**
 * One instance the cluster's document asks for: `<tenant>/<pool>/<kind>-<n>`. Slots are derived
 * from the document alone, so every scheduler derives the same ones; each is placed on one node.
 */
export interface Slot {
  id: string;
  tenant: string;
  pool: string;
  kind: SlotKind;
  /** The memory it books on its node: none for a Sleeping instance, which holds no VMM. */
  memoryMiB: number;
}

/** The slots of a document (checked against its quotas when it was applied). */
export function desiredSlots(doc: DesiredDocument): Slot[] {
  return doc.pools.flatMap((pool) =>
    SLOT_KINDS.flatMap((kind) =>
      Array.from({ length: pool.desired[kind] }, (_, n) => ({
        id: `${pool.tenant}/${pool.id}/${kind}-${n}`,
        tenant: pool.tenant,
        pool: pool.id,
        kind,
        memoryMiB: kind === 'sleeping' ? 0 : pool.memoryMiB,
      })),
    ),
  );
}

/** The pool a slot id names (`<tenant>/<pool>`), and its kind. */
export function parseSlotId(id: string): { pool: string; kind: SlotKind } | undefined {
  const match = /^([^/]+\/[^/]+)\/(running|warm|sleeping)-\d+$/.exec(id);
  return match ? { pool: match[1] as string, kind: match[2] as SlotKind } : undefined;
}

/**
 * A node's share of the cluster's document: every tenant and pool (so that the node's reconcile
 * with prune removes only what the cluster removed), with the counts of the slots placed on it.
 */
export function shareOf(doc: DesiredDocument, slotsHere: Iterable<string>): DesiredDocument {
  const counts = new Map<string, Record<SlotKind, number>>();
  for (const id of slotsHere) {
    const slot = parseSlotId(id);
    if (!slot) continue;
    const count = counts.get(slot.pool) ?? { running: 0, warm: 0, sleeping: 0 };
    count[slot.kind] += 1;
    counts.set(slot.pool, count);
  }
  return {
    ...doc,
    pools: doc.pools.map((pool) => ({
      ...pool,
      desired: counts.get(`${pool.tenant}/${pool.id}`) ?? { running: 0, warm: 0, sleeping: 0 },
    })),
  };
}

/** A node a slot may go to: its memory not yet booked by slots. */
export interface Candidate {
  node: string;
  freeMiB: number;
}

/**
 * Best of K: among up to `k` candidates drawn at random from those with room for `memoryMiB`, the
 * one with the most free memory. Undefined when none has room.
 */
export function bestOfK(
  candidates: Candidate[],
  memoryMiB: number,
  k: number,
  random: () => number = Math.random,
): Candidate | undefined {
  const fits = candidates.filter((candidate) => candidate.freeMiB >= memoryMiB);
  for (let i = fits.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [fits[i], fits[j]] = [fits[j] as Candidate, fits[i] as Candidate];
  }
  return fits
    .slice(0, Math.max(1, k))
    .reduce<Candidate | undefined>(
      (best, candidate) => (!best || candidate.freeMiB > best.freeMiB ? candidate : best),
      undefined,
    );
}

import { z } from 'zod';
import { ConfigError } from '../../errors.js';
import { parseInput } from '../../util/validate.js';

/** Lowercase letters, digits and inner dashes, 1 to 24 characters: ids appear in paths and audit lines. */
export const FLEET_ID = /^[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?$/;
export const fleetId = z.string({ error: 'must be a string' }).regex(FLEET_ID, {
  error: 'must be 1-24 lowercase letters, digits or dashes, starting and ending with a letter or digit',
});

export function validateId(value: unknown, what: string): string {
  return parseInput(fleetId, value, what);
}

export interface FleetAddress {
  tenant: string;
  pool?: string;
  instance?: string;
}

/** Parses `<tenant>`, `<tenant>/<pool>` or `<tenant>/<pool>/<instance>` with the parts required. */
export function parseAddress(text: string, parts: 1 | 2 | 3): Required<FleetAddress> {
  const names = ['tenant', 'pool', 'instance'] as const;
  const pieces = text.split('/');
  const shape = names
    .slice(0, parts)
    .map((name) => `<${name}>`)
    .join('/');
  if (pieces.length !== parts) throw new ConfigError(`address ${JSON.stringify(text)} must be ${shape}`);
  const result: FleetAddress = { tenant: '' };
  pieces.forEach((piece, index) => {
    const name = names[index] as (typeof names)[number];
    result[name] = validateId(piece, `${name} id in ${JSON.stringify(text)}`);
  });
  return { pool: '', instance: '', ...result };
}

import { createInterface } from 'node:readline/promises';
import { type Command, InvalidArgumentError } from 'commander';
import { ConfigError } from '../../errors.js';
import { Fleet } from '../../fleet/fleet.js';
import { FLEET_BUILDERS, type FleetBuilder } from '../../fleet/images/pool-image.js';

export interface FleetGlobals {
  fleetDir?: string;
  json?: boolean;
  builder?: FleetBuilder;
}

/** --builder: where recipe images are built (the Fleet's default when not given). */
export function builderOption(value: string): FleetBuilder {
  if (!(FLEET_BUILDERS as readonly string[]).includes(value)) {
    throw new ConfigError(`--builder: expected ${FLEET_BUILDERS.join(' or ')}, got ${JSON.stringify(value)}`);
  }
  return value as FleetBuilder;
}

export function builderOf(command: Command): { builder?: FleetBuilder } {
  const { builder } = command.optsWithGlobals<FleetGlobals>();
  return builder ? { builder } : {};
}

/** Opens the fleet named by --fleet-dir, repairs what interrupted calls left, runs `work`, closes. */
export async function withFleet<T>(
  command: Command,
  work: (fleet: Fleet, json: boolean) => Promise<T>,
): Promise<T> {
  const globals = command.optsWithGlobals<FleetGlobals>();
  const fleet = new Fleet({
    dir: globals.fleetDir,
    log: (line) => process.stderr.write(`${line}\n`),
    ...builderOf(command),
  });
  try {
    for (const repair of await fleet.repair()) {
      process.stderr.write(
        `vmkit: repaired ${repair.path}: ${repair.from} -> ${repair.to}: ${repair.reason}\n`,
      );
    }
    return await work(fleet, Boolean(globals.json));
  } finally {
    await fleet.close();
  }
}

/** Prints `value` as JSON with --json, else the text. */
export function output(json: boolean, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

/**
 * A whole-number option value; the model's schemas check its range. Commander reports the error
 * with the option's name (`option '--running <n>' argument '-1' is invalid`), exit 2.
 */
export function wholeOption(value: string): number {
  if (!/^\d{1,15}$/.test(value)) throw new InvalidArgumentError('expected a whole number');
  return Number(value);
}

/**
 * Destroying what holds instances asks first on a terminal; without one it takes --yes.
 */
export async function confirmDestroy(
  what: string,
  instances: number,
  yes: boolean | undefined,
): Promise<void> {
  if (yes || instances === 0) return;
  if (!process.stdin.isTTY) {
    throw new ConfigError(
      `${what} has ${instances} instance(s): pass --yes to destroy it without a terminal`,
    );
  }
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await prompt.question(`${what} has ${instances} instance(s). Destroy them all? [y/N] `);
  prompt.close();
  if (!/^y(es)?$/i.test(answer.trim())) throw new ConfigError(`${what}: not destroyed`);
}

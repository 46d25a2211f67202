import { ConfigError } from '../../errors.js';
import { debianProfile } from './debian.js';
import { mockProfile } from './mock.js';
import type { GuestProfile } from './profile.js';
import { tinyProfile } from './tiny.js';

export { foreignProfile } from './foreign.js';

export type { AgentRestore, BootSetup, GuestNic, GuestProfile, RestoreSetup } from './profile.js';

const PROFILES: Record<string, GuestProfile> = {
  tiny: tinyProfile,
  debian: debianProfile,
  mock: mockProfile,
};

/** The profile of an image, by the name its manifest gives. */
export function profileNamed(name: string): GuestProfile {
  const profile = Object.hasOwn(PROFILES, name) ? PROFILES[name] : undefined;
  if (!profile) {
    throw new ConfigError(
      `no guest profile ${JSON.stringify(name)} (known: ${Object.keys(PROFILES).join(', ')})`,
    );
  }
  return profile;
}

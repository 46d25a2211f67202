import { ConfigError } from '../errors.js';
import type { Backend } from './backend.js';
import { qemuBackend } from './qemu/backend.js';

export type { Backend, BackendCapabilities, Capability } from './backend.js';
export { requireCapability } from './backend.js';

const BACKENDS: Record<string, Backend> = { qemu: qemuBackend };

export const BACKEND_NAMES = Object.keys(BACKENDS);

/** The backend called `name` (default QEMU). */
export function backendNamed(name = 'qemu'): Backend {
  const backend = Object.hasOwn(BACKENDS, name) ? BACKENDS[name] : undefined;
  if (!backend)
    throw new ConfigError(`unknown backend ${JSON.stringify(name)} (known: ${BACKEND_NAMES.join(', ')})`);
  return backend;
}

import { ConfigError } from '../errors.js';
import type { Backend } from './backend.js';
import { mockBackend } from './mock/backend.js';
import { qemuBackend } from './qemu/backend.js';

export type { Backend, BackendCapabilities, Capability } from './backend.js';
export { detachedVmms, requireCapability } from './backend.js';

// `mock` by name has an empty script: every command is unexpected. Give a machine
// `backend: mockBackend({ script })` for one that answers.
const BACKENDS: Record<string, Backend> = { qemu: qemuBackend, mock: mockBackend() };

export const BACKEND_NAMES = Object.keys(BACKENDS);

/** The backend called `name` (default QEMU), or `backend` itself when it is one (mockBackend()). */
export function backendNamed(name: string | Backend = 'qemu'): Backend {
  if (typeof name !== 'string') return name;
  const backend = Object.hasOwn(BACKENDS, name) ? BACKENDS[name] : undefined;
  if (!backend)
    throw new ConfigError(`unknown backend ${JSON.stringify(name)} (known: ${BACKEND_NAMES.join(', ')})`);
  return backend;
}

/**
 * Tests only: `VMKIT_TEST_KILL_AT=<operation>:<step>` makes the process SIGKILL itself the moment
 * that operation reaches that step (its name, or the start of it), like `kill -9` from an operator
 * but at a boundary the test names, so that every step boundary of a crash-safe operation can be
 * tested without guessing at timings.
 */
export const KILL_AT_ENV = 'VMKIT_TEST_KILL_AT';

export function killPoint(operation: string, step: string): void {
  const at = process.env[KILL_AT_ENV];
  if (!at) return;
  const colon = at.indexOf(':');
  if (at.slice(0, colon) === operation && step.startsWith(at.slice(colon + 1))) {
    process.kill(process.pid, 'SIGKILL');
  }
}

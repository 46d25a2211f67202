import { fileURLToPath } from 'node:url';

/**
 * The node command line that runs one of vmkit's own entry modules in a new process: the
 * compiled .js next to the caller, or under tsx when vmkit runs from its TypeScript sources.
 */
export function nodeEntry(
  callerUrl: string,
  entry: string,
  args: string[],
): { program: string; args: string[] } {
  const fromSources = callerUrl.endsWith('.ts');
  const file = fileURLToPath(new URL(`${entry}${fromSources ? '.ts' : '.js'}`, callerUrl));
  const loader = fromSources ? ['--import', import.meta.resolve('tsx')] : [];
  return { program: process.execPath, args: [...loader, file, ...args] };
}

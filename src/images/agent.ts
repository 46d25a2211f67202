import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { ensureDir } from '../util/files.js';
import { guestFilesDir } from '../util/paths.js';

/** The guest agent's C sources (guest/agent/), compiled into every image at build time. */
const AGENT_SOURCES = ['agent.h', 'codec.c', 'transfer.c', 'identity.c', 'main.c'];
/** A static binary: it runs on busybox-only initramfs images and on any Debian alike. */
const COMPILE_FLAGS = ['-static', '-Os', '-s', '-Wall', '-Wextra', '-Werror'];
const COMPILER = 'musl-gcc';
/** Where both images install it. */
export const AGENT_GUEST_PATH = 'etc/vmkit/vmkit-agent';

export interface AgentInputs {
  compiler: string;
  flags: string[];
  /** File name to its text: part of every image's content key. */
  sources: Record<string, string>;
}

export async function agentInputs(): Promise<AgentInputs> {
  const sources: Record<string, string> = {};
  for (const file of AGENT_SOURCES)
    sources[file] = await readFile(join(guestFilesDir(), 'agent', file), 'utf8');
  return { compiler: COMPILER, flags: COMPILE_FLAGS, sources };
}

/** Compiles the agent from its sources (in `scratch`) and returns the binary. */
export async function buildAgent(inputs: AgentInputs, scratch: string): Promise<Buffer> {
  await ensureDir(scratch);
  const dir = await mkdtemp(join(scratch, 'agent-'));
  try {
    for (const [file, text] of Object.entries(inputs.sources)) await writeFile(join(dir, file), text);
    const output = join(dir, 'vmkit-agent');
    const units = Object.keys(inputs.sources).filter((file) => file.endsWith('.c'));
    await runTool(inputs.compiler, [...inputs.flags, '-o', output, ...units], {
      cwd: dir,
      timeoutMs: 120_000,
    }).catch((error: Error) => {
      throw new ImageError(
        `compiling the guest agent failed (${inputs.compiler} comes with Debian's musl-tools; scripts/setup.sh installs it): ${error.message}`,
      );
    });
    return await readFile(output);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

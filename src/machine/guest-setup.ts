import type { BackdoorChannel } from '../agent/backdoor.js';
import { encodeRequest, type GuestIdentity, UNKNOWN_REQUEST } from '../agent/framing.js';
import { GuestSetupError, MachineCrashedError } from '../errors.js';
import type { AgentRestore, GuestProfile, RestoreSetup } from '../guest/profiles/index.js';

/**
 * Tells a new guest who it is: through the agent's own identity request where the plan has one
 * and the agent knows it, by script for the rest; all by script for an agent older than it.
 */
export async function setUpGuest(
  agent: Pick<BackdoorChannel, 'control'>,
  run: (script: string) => Promise<unknown>,
  plan: { setupScript: string; agentSetup?: AgentRestore; log: (line: string) => void },
): Promise<void> {
  let script = plan.setupScript;
  if (plan.agentSetup) {
    if (await setIdentity(agent, plan.agentSetup.identity)) script = plan.agentSetup.script;
    else plan.log('the guest agent predates the identity request: the set-up script does it all');
  }
  if (script !== '') await run(script);
}

/**
 * Sets up a guest restored into a VMM vmkit does not hold as a Machine (a fleet instance, a
 * project VM) over its agent, as a restored Machine is: the clock, hostname, entropy and machine
 * ID by the agent's identity request where the profile has one, the rest and `afterwards` (shell
 * lines to run after) by one script, none when nothing is left. A failure names `what`, with the console.
 */
export async function setUpRestoredGuest(
  agent: Pick<BackdoorChannel, 'control' | 'run'>,
  profile: GuestProfile,
  setup: RestoreSetup,
  options: {
    what: string;
    name: string;
    consoleTail: () => string;
    afterwards?: string;
    log?: (line: string) => void;
  },
): Promise<void> {
  const withAfter = (script: string) =>
    [script, options.afterwards ?? ''].filter((part) => part !== '').join('\n');
  const byAgent = profile.restoreByAgent?.(setup);
  const run = async (script: string) => {
    const result = await agent.run(script, 30_000);
    if (result.status !== 0) {
      throw new MachineCrashedError(
        options.name,
        `${options.what} failed (status ${result.status}): ${result.stderr.toString().trim()}`,
        options.consoleTail(),
      );
    }
  };
  await setUpGuest(agent, run, {
    setupScript: withAfter(profile.afterRestore(setup)),
    ...(byAgent ? { agentSetup: { identity: byAgent.identity, script: withAfter(byAgent.script) } } : {}),
    log: options.log ?? (() => {}),
  }).catch((error: Error) => {
    if (error instanceof MachineCrashedError) throw error;
    throw new MachineCrashedError(
      options.name,
      `${options.what} failed: ${error.message}`,
      options.consoleTail(),
    );
  });
}

/**
 * Sets a restored guest's clock (to the host's, as the request goes out), hostname and entropy
 * in the agent itself. False when the agent is older than the request and did nothing.
 */
async function setIdentity(
  agent: Pick<BackdoorChannel, 'control'>,
  identity: GuestIdentity,
): Promise<boolean> {
  const result = await agent.control('the identity request', (id) =>
    encodeRequest.identity(id, identity, Date.now()),
  );
  const stderr = result.stderr.toString().trim();
  if (result.status === 2 && UNKNOWN_REQUEST.test(stderr)) return false;
  if (result.status !== 0) {
    throw new GuestSetupError(`the agent's identity request failed (status ${result.status}): ${stderr}`);
  }
  return true;
}

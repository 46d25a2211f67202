import type { BackdoorChannel } from '../agent/backdoor.js';
import { encodeRequest, type GuestIdentity, UNKNOWN_REQUEST } from '../agent/framing.js';
import { GuestSetupError } from '../errors.js';
import type { AgentRestore } from '../guest/profiles/index.js';

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

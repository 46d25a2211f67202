import type { BackdoorChannel } from '../agent/backdoor.js';
import type { AgentRestore } from '../guest/profiles/index.js';

/**
 * Tells a new guest who it is: through the agent's own identity request where the plan has one
 * and the agent knows it, by script for the rest; all by script for an agent older than it.
 */
export async function setUpGuest(
  agent: Pick<BackdoorChannel, 'setIdentity'>,
  run: (script: string) => Promise<unknown>,
  plan: { setupScript: string; agentSetup?: AgentRestore; log: (line: string) => void },
): Promise<void> {
  let script = plan.setupScript;
  if (plan.agentSetup) {
    if (await agent.setIdentity(plan.agentSetup.identity)) script = plan.agentSetup.script;
    else plan.log('the guest agent predates the identity request: the set-up script does it all');
  }
  if (script !== '') await run(script);
}

import { randomInt } from 'node:crypto';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { BackdoorChannel } from '../../agent/backdoor.js';
import { MachineCrashedError, VmmStartError } from '../../errors.js';
import { type Turn, takeTurn } from '../../util/turn.js';
import type { AgentAttachment, AgentAttachOptions } from '../detached.js';
import { SOCKETS } from './args.js';
import { connectVmmSocket } from './sockets.js';

/** The key of the host-wide turn on a VMM's agent sockets (see util/turn.ts). */
export const agentTurnKey = (stateDir: string) => join(stateDir, SOCKETS.shell);

/**
 * Connects to the guest agent of the VMM in `stateDir` and checks that it answers. The guest
 * restarts its backdoor when an earlier host went away, so the first request waits for that
 * restart's banner. The channel fails at once when the VMM closes the connection (it ended).
 */
export async function attachAgent(
  name: string,
  stateDir: string,
  options: AgentAttachOptions,
): Promise<AgentAttachment> {
  const { timeoutMs, consoleTail } = options;
  const turn: Turn | undefined = options.turn
    ? await takeTurn(agentTurnKey(stateDir), timeoutMs, `a turn on the agent of ${name}`, options.turn)
    : undefined;
  const sockets: Socket[] = [];
  const close = () => {
    for (const socket of sockets) socket.destroy();
    turn?.release();
  };
  try {
    options.connecting?.();
    const shell = await connectVmmSocket(join(stateDir, SOCKETS.shell), timeoutMs, name);
    sockets.push(shell);
    sockets.push(await connectVmmSocket(join(stateDir, SOCKETS.transfer), timeoutMs, name));
    // Ids of its own: a reply to a request of a vanished earlier caller cannot match one of ours.
    const channel = new BackdoorChannel(name, shell, sockets[1], consoleTail, randomInt(1e6, 1e9));
    shell.once('close', () =>
      channel.fail(
        new MachineCrashedError(name, 'the connection to its agent closed (its VMM ended)', consoleTail()),
      ),
    );
    // The guest drops what arrives while its backdoor has the port closed, so a request is only
    // safe after the banner: a restarting backdoor prints one within about a second. No banner
    // means the backdoor had the port open before this attach, and reads requests already.
    const restarted = await channel.waitForBanner(Math.min(timeoutMs, options.bannerWaitMs)).then(
      () => true,
      () => false,
    );
    if (!restarted) channel.assumeBannerSeen();
    // A banner can also come late, under the probe: the backdoor was blocked writing a reply to
    // a host that went away mid-request (a killed CLI) and restarts only once we drain it. The
    // probe is harmless to repeat, and the restarted backdoor reads it.
    const probe = await channel.ping(timeoutMs).catch((error: Error) => {
      if (error instanceof MachineCrashedError && /restarted during/.test(error.message))
        return channel.ping(timeoutMs);
      throw error;
    });
    if (probe.status !== 0)
      throw new VmmStartError(`the agent of ${name} did not answer a probe (status ${probe.status})`);
    return { channel, close };
  } catch (error) {
    close();
    throw error;
  }
}

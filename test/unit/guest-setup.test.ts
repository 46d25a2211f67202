// The set-up of a restored guest: the agent's identity request, and the fallback to the whole
// set-up script when the agent is older than that request (it answers as guest/agent/main.c
// answers any request it does not know).
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { BackdoorChannel } from '../../src/agent/backdoor.js';
import type { AgentRestore } from '../../src/guest/profiles/index.js';
import { setUpGuest } from '../../src/machine/guest-setup.js';

type Answer = (kind: string, id: number) => { status: number; stderr?: string };

/** A guest agent on the far end of a channel: every request it gets, answered by `answer`. */
function fakeAgent(answer: Answer) {
  const requests: string[] = [];
  const socket: Duplex = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, done) {
      const line = chunk.toString();
      requests.push(line);
      const [kind = '', id = '0'] = line.split(' ');
      const { status, stderr = '' } = answer(kind, Number(id));
      const err = Buffer.from(stderr).toString('base64');
      socket.push(`<<<VMKIT:R ${id} ${status} 0>>>\n\n${err}\n<<<VMKIT:E ${id}>>>\n`);
      done();
    },
  });
  const channel = new BackdoorChannel('m', socket as unknown as Socket, undefined, () => '');
  channel.assumeBannerSeen();
  return { channel, requests };
}

const agentSetup: AgentRestore = {
  identity: { hostname: 'clone', hostnameFiles: false, entropy: Buffer.alloc(8, 7) },
  script: 'renumber',
};

async function setUp(answer: Answer, split: AgentRestore | null = agentSetup) {
  const { channel, requests } = fakeAgent(answer);
  const scripts: string[] = [];
  const logged: string[] = [];
  const run = async (script: string) => {
    scripts.push(script);
    const result = await channel.run(script, 5_000);
    if (result.status !== 0) throw new Error(`status ${result.status}`);
  };
  await setUpGuest(channel, run, {
    setupScript: 'whole set-up',
    ...(split ? { agentSetup: split } : {}),
    log: (l) => logged.push(l),
  });
  return { kinds: requests.map((line) => line.split(' ')[0]), scripts, logged };
}

describe('the set-up of a restored guest', () => {
  it('asks the agent for clock, hostname and entropy, then scripts only the rest', async () => {
    const { kinds, scripts, logged } = await setUp(() => ({ status: 0 }));
    assert.deepEqual(kinds, ['T', 'Y']);
    assert.deepEqual(scripts, ['renumber']);
    assert.deepEqual(logged, []);
  });

  it('runs no script when the agent did it all', async () => {
    const { kinds } = await setUp(() => ({ status: 0 }), { ...agentSetup, script: '' });
    assert.deepEqual(kinds, ['T']);
  });

  it('falls back to the whole script with an agent that does not know the request', async () => {
    // An old agent's answer, as main.c's default case frames it.
    const old: Answer = (kind) =>
      kind === 'T' ? { status: 2, stderr: "vmkit backdoor: unknown request 'T'\n" } : { status: 0 };
    const { kinds, scripts, logged } = await setUp(old);
    assert.deepEqual(kinds, ['T', 'Y']);
    assert.deepEqual(scripts, ['whole set-up']);
    assert.match(logged.join('\n'), /predates the identity request/);
  });

  it('fails with the guest’s words when the agent knows the request but could not do it', async () => {
    const failing: Answer = () => ({ status: 1, stderr: 'clock_settime: Operation not permitted\n' });
    await assert.rejects(setUp(failing), /clock_settime: Operation not permitted/);
  });

  it('runs the script alone for a profile with no identity request', async () => {
    const { kinds, scripts } = await setUp(() => ({ status: 0 }), null);
    assert.deepEqual(kinds, ['Y']);
    assert.deepEqual(scripts, ['whole set-up']);
  });
});

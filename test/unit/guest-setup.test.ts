// The set-up of a restored guest: the agent's identity request, and the fallback to the whole
// set-up script when the agent is older than that request (it answers as guest/agent/main.c
// answers any request it does not know).
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { BackdoorChannel } from '../../src/agent/backdoor.js';
import { MachineCrashedError } from '../../src/errors.js';
import type { AgentRestore } from '../../src/guest/profiles/index.js';
import { tinyProfile } from '../../src/guest/profiles/tiny.js';
import { setUpGuest, setUpRestoredGuest } from '../../src/machine/guest-setup.js';

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

describe('the set-up of a guest restored into a VMM vmkit does not hold (fleet, project)', () => {
  const restored = {
    clockSeconds: 1_800_000_000,
    hostname: 'web-1',
    entropyHex: 'ab'.repeat(16),
    renumber: [],
    hosts: {},
  };
  const options = { what: 'guest set-up after wake', name: 'acme/web/1', consoleTail: () => 'console tail' };
  /** The request lines the agent got: kind, and the script of each X or Y request. */
  const sent = (requests: string[]) =>
    requests.map((line) =>
      line.startsWith('Y ') ? `Y ${line.split(' ').slice(3).join(' ').trim()}` : line.split(' ')[0],
    );

  it('sets clock, hostname and entropy by the identity request; only `afterwards` runs as a script', async () => {
    const { channel, requests } = fakeAgent(() => ({ status: 0 }));
    await setUpRestoredGuest(channel, tinyProfile, restored, {
      ...options,
      afterwards: 'echo 1 > /run/vmkit/woke',
    });
    assert.deepEqual(sent(requests), ['T', 'Y echo 1 > /run/vmkit/woke']);
    assert.match(requests[0] as string, new RegExp(` ${Buffer.from('web-1').toString('base64')} `));
  });

  it('starts no guest process when nothing is left for a script', async () => {
    const { channel, requests } = fakeAgent(() => ({ status: 0 }));
    await setUpRestoredGuest(channel, tinyProfile, restored, options);
    assert.deepEqual(sent(requests), ['T']);
  });

  it('runs the whole set-up script, and `afterwards`, with an agent older than the request', async () => {
    const { channel, requests } = fakeAgent((kind) =>
      kind === 'T' ? { status: 2, stderr: "vmkit backdoor: unknown request 'T'\n" } : { status: 0 },
    );
    await setUpRestoredGuest(channel, tinyProfile, restored, { ...options, afterwards: 'true' });
    const script = requests[1] as string;
    assert.equal(requests.length, 2);
    assert.match(script, /'clock' '1800000000' 'hostname' 'web-1' 'entropy'/);
    assert.match(script, /\ntrue$/);
  });

  it('fails naming what it did, with the console, when the script fails', async () => {
    const { channel } = fakeAgent((kind) =>
      kind === 'T' ? { status: 0 } : { status: 3, stderr: 'no such file\n' },
    );
    await assert.rejects(
      setUpRestoredGuest(channel, tinyProfile, restored, { ...options, afterwards: 'false' }),
      (error: Error) => {
        assert.ok(error instanceof MachineCrashedError);
        assert.match(
          error.message,
          /acme\/web\/1: guest set-up after wake failed \(status 3\): no such file/,
        );
        assert.match(error.message, /console tail/);
        return true;
      },
    );
  });
});

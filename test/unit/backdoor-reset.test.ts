// BackdoorChannel when the guest resets: the call in flight fails with GuestRebootedError, later
// calls wait for the banner and the set-up, and a recovery another reset overtook sets up nothing.
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { BackdoorChannel } from '../../src/agent/backdoor.js';
import { GuestRebootedError } from '../../src/errors.js';

/** A guest end: what the host wrote (one-line requests), and a way to answer. */
function fakeGuest() {
  const requests: Array<{ id: number; script: string }> = [];
  const waiters: Array<() => void> = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, done) {
      const match = /^Y (\d+) \d+ (.*)\n$/.exec(chunk.toString());
      if (match) requests.push({ id: Number(match[1]), script: match[2] as string });
      for (const wake of waiters.splice(0)) wake();
      done();
    },
  });
  const channel = new BackdoorChannel('m', socket as unknown as Socket, undefined, () => '');
  const say = (text: string) => socket.push(Buffer.from(text));
  return {
    channel,
    requests,
    banner: () => say('\nSpawning backdoor root shell...\n'),
    reply: (id: number, stdout: string) =>
      say(`<<<VMKIT:R ${id} 0 0>>>\n${Buffer.from(stdout).toString('base64')}\n\n<<<VMKIT:E ${id}>>>\n`),
    /** Resolves once the host has written `count` requests. */
    written: async (count: number) => {
      while (requests.length < count) await new Promise<void>((wake) => waiters.push(wake));
      return requests[count - 1] as { id: number; script: string };
    },
  };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

describe('a backdoor channel when the guest resets', () => {
  it('fails the call in flight, holds the next until banner and set-up, then runs it', async () => {
    const guest = fakeGuest();
    guest.channel.assumeBannerSeen();
    const inFlight = guest.channel.run('sleep 60', 60_000);
    await guest.written(1);
    let setups = 0;
    guest.channel.guestReset(
      (what) => new GuestRebootedError('m', what, ''),
      async (run) => {
        await guest.channel.waitForBanner(5_000);
        setups++;
        await run('setup', 5_000);
      },
    );
    await assert.rejects(inFlight, (error: Error) => {
      assert.ok(error instanceof GuestRebootedError);
      assert.match(
        error.message,
        /^machine m: the guest rebooted during command "sleep 60", which cannot complete/,
      );
      return true;
    });
    const later = guest.channel.run('echo hi', 5_000);
    await settle();
    assert.equal(guest.requests.length, 1, 'nothing is sent before the guest is back');
    guest.banner();
    const setup = await guest.written(2);
    assert.equal(setup.script, 'setup');
    await settle();
    assert.equal(guest.requests.length, 2, 'the call waits for the set-up to finish');
    guest.reply(setup.id, '');
    const echo = await guest.written(3);
    assert.equal(echo.script, 'echo hi');
    guest.reply(echo.id, 'hi\n');
    assert.equal((await later).stdout.toString(), 'hi\n');
    assert.equal(setups, 1);
  });

  it('a second reset before the banner leaves the set-up to the newest recovery', async () => {
    const guest = fakeGuest();
    guest.channel.assumeBannerSeen();
    const setups: string[] = [];
    const recover =
      (name: string) => async (run: (s: string, t: number) => Promise<unknown>, latest: () => boolean) => {
        await guest.channel.waitForBanner(5_000);
        if (!latest()) return;
        setups.push(name);
        await run(`setup-${name}`, 5_000);
      };
    const rebooted = (what: string) => new GuestRebootedError('m', what, '');
    guest.channel.guestReset(rebooted, recover('first'));
    guest.channel.guestReset(rebooted, recover('second'));
    const later = guest.channel.run('true', 5_000);
    guest.banner();
    const setup = await guest.written(1);
    assert.equal(setup.script, 'setup-second');
    guest.reply(setup.id, '');
    const call = await guest.written(2);
    guest.reply(call.id, '');
    await later;
    assert.deepEqual(setups, ['second']);
  });

  it('a wait for the guest to come back is bounded by the call', async () => {
    const guest = fakeGuest();
    guest.channel.assumeBannerSeen();
    guest.channel.guestReset(
      (what) => new GuestRebootedError('m', what, ''),
      () => guest.channel.waitForBanner(60_000),
    );
    await assert.rejects(
      guest.channel.run('true', 1_000),
      /waiting for the guest to come back from its reboot/,
    );
    guest.channel.fail(new Error('closed'));
  });
});

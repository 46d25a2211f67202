// A Machine over a VMM someone else owns (machine/attached.ts) and the project hub's lend of its
// agent (project/hub-agent.ts), on the mock backend: no QEMU. The real paths (a fleet instance,
// a project VM) are in vm/fleet-exec and vm/project-api.
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { BackdoorChannel } from '../../src/agent/backdoor.js';
import type { AgentAttachment } from '../../src/backends/detached.js';
import { MachineCrashedError, mockBackend, OwnedElsewhereError, startMachine } from '../../src/index.js';
import { attachedMachine } from '../../src/machine/attached.js';
import { AgentLentError, HubAgent } from '../../src/project/hub-agent.js';
import { Runtime } from '../../src/runtime/runtime.js';

const runtime = new Runtime();
const scratch = mkdtempSync(join(tmpdir(), 'vmkit-attached-'));
after(async () => {
  await runtime.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** A mock machine whose agent another Machine attaches to, as a fleet's or a project's would. */
async function ownedAndAttached() {
  const backend = mockBackend({ otherwise: { stdout: 'answered\n' } });
  const owner = await startMachine({ name: 'owned', backend, runtime, commandTimeoutMs: 5_000 });
  const consoleLog = join(scratch, `console-${owner.pid}.log`);
  writeFileSync(consoleLog, 'booted earlier\n');
  let running = true;
  let agentClosed = 0;
  let released = 0;
  const machine = await attachedMachine({
    name: 'acme/web/1',
    config: owner.config,
    accel: owner.accel,
    backend,
    runtime,
    profile: owner.parts.profile,
    agent: { channel: owner.parts.agent, close: () => agentClosed++ },
    pid: owner.pid,
    isRunning: () => running,
    consoleLog,
    owner: 'it is fleet instance acme/web/1 (vmkit fleet instance stop acme/web/1)',
    release: () => released++,
    commandTimeoutMs: 5_000,
  });
  return {
    owner,
    machine,
    consoleLog,
    end: () => {
      running = false;
    },
    counts: () => ({ agentClosed, released }),
  };
}

describe('a Machine attached to a VMM it does not own', () => {
  test('runs commands over the lent agent; its console follows the VMM log; close lets go and leaves the VMM', async () => {
    const { owner, machine, consoleLog, counts } = await ownedAndAttached();
    assert.equal(await machine.succeed('anything'), 'answered\n');
    assert.match(machine.getConsoleLog(), /booted earlier/);
    appendFileSync(consoleLog, 'printed later\n');
    await machine.waitForConsoleText('printed later', { timeoutMs: 5_000 });
    await machine.close();
    await machine.close(); // twice is fine
    assert.deepEqual(counts(), { agentClosed: 1, released: 1 });
    assert.ok(owner.isRunning, 'the VMM runs on');
    await assert.rejects(machine.execute('x'), MachineCrashedError);
    await owner.close();
  });

  test("refuses what would change the VMM's life, naming its owner's command", async () => {
    const { owner, machine } = await ownedAndAttached();
    const refusals: Array<[string, () => Promise<unknown> | unknown]> = [
      ['shutdown()', () => machine.shutdown()],
      ['reboot()', () => machine.reboot()],
      ['crash()', () => machine.crash()],
      ['snapshot()', () => machine.snapshot()],
      ['forwardPort()', () => machine.forwardPort({ guestPort: 80 })],
      ['block() and unblock()', () => machine.block()],
      ['sendConsole()', () => machine.sendConsole('x')],
      ['consoleShell()', () => machine.consoleShell()],
      ['its monitor (qmp, sendMonitorCommand, waitForQmpEvent)', () => machine.qmp],
      ['sendMonitorCommand()', () => machine.sendMonitorCommand('info status')],
      [
        'attachDisk()',
        () => machine.attachDisk({ path: join(scratch, 'd.qcow2'), format: 'qcow2', serial: 'd1' }),
      ],
    ];
    for (const [call, act] of refusals) {
      await assert.rejects((async () => act())(), (error: Error) => {
        assert.ok(error instanceof OwnedElsewhereError, `${call}: ${error}`);
        assert.equal(
          error.message,
          `machine acme/web/1: ${call} is not for an attached machine: it is fleet instance acme/web/1 (vmkit fleet instance stop acme/web/1)`,
        );
        return true;
      });
    }
    assert.ok(owner.isRunning && machine.isRunning);
    await machine.close();
    await owner.close();
  });

  test('the VMM ending (its owner stopped it) fails the calls with MachineCrashedError', async () => {
    const { owner, machine, end } = await ownedAndAttached();
    end();
    await machine.waitForShutdown({ timeoutMs: 5_000 });
    assert.equal(machine.isRunning, false);
    await assert.rejects(machine.execute('x'), MachineCrashedError);
    await machine.close();
    await owner.close();
  });
});

/** An attachment whose channel only counts what is asked of it. */
function fakeAttachment(log: string[], name: string): AgentAttachment {
  const channel = { run: async () => ({ status: 0 }), fail: () => log.push(`${name} failed`) };
  return { channel: channel as unknown as BackdoorChannel, close: () => log.push(`${name} closed`) };
}

describe("the project hub's agent, lent to a Machine", () => {
  test('a lend waits for running work, lets the agent go, refuses requests meanwhile, and attaches again', async () => {
    const log: string[] = [];
    let attachments = 0;
    const agent = new HubAgent('box', fakeAttachment(log, 'first'), async () =>
      fakeAttachment(log, `again-${++attachments}`),
    );
    let finish!: () => void;
    const running = agent.use(() => new Promise<void>((resolve) => (finish = resolve)));
    const lending = agent.lend('a Machine in process 1', 5_000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(log, [], 'the lend waits for the running request');
    finish();
    await running;
    const takeBack = await lending;
    assert.deepEqual(log, ['first closed']);
    assert.throws(() => agent.begin(), AgentLentError);
    await assert.rejects(
      agent.use(async () => 'x'),
      /held by a Machine in process 1 until it closes/,
    );
    await assert.rejects(agent.lend('another', 1000), /already held by a Machine in process 1/);
    takeBack();
    assert.equal(await agent.use(async () => 'served'), 'served');
    assert.equal(attachments, 1);
  });

  test('a lend gives up after its timeout while something runs, naming what it waited for', async () => {
    const agent = new HubAgent('box', fakeAttachment([], 'first'), async () => fakeAttachment([], 'again'));
    const end = agent.begin(); // a shell elsewhere
    await assert.rejects(agent.lend('a Machine', 100), /the commands running in VM box to end/);
    end();
    assert.equal(await agent.use(async () => 'still served'), 'still served');
  });
});

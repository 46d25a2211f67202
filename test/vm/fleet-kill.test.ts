// kill -9 of the fleet CLI at every named step boundary of wake, sleep, start and stop (the
// VMKIT_TEST_KILL_AT hook, so that no boundary depends on timing), then the next CLI call's
// repair: the records agree with the VMM, and nothing the guest held is lost.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Fleet } from '../../src/fleet/fleet.js';
import { KILL_AT_ENV } from '../../src/fleet/state/steps.js';
import { hasSleepState, instanceDir, vmProcesses, vmStatus } from '../../src/fleet/vmm/vm.js';
import { processesNaming, stopDetached } from '../../src/runtime/detached.js';
import { lacks, runCli } from '../helpers.js';

const dir = mkdtempSync('/tmp/vmkit-fkill-');
const fleetArgs = ['fleet', '--fleet-dir', dir];
const PATH = 'alpha/web/k1';
const sh = (script: string) => ['sh', '-c', script];

/** Each operation's kill points, in the order it reaches them. */
const POINTS = {
  wake: [
    'begun',
    'image, switch and secrets disk ready',
    'QEMU up',
    'limits applied',
    'device state loaded',
    'guest set up',
    'sleep state removed',
  ],
  sleep: ['begun', 'device state saved', 'RAM delta written', 'sleep state complete', 'VMM ended'],
  start: ['begun', 'QEMU up', 'base state loaded', 'guest set up'],
  stop: ['begun', 'VMM ended'],
} as const;

describe('fleet repair after kill -9 at every step boundary', {
  skip: lacks('detached') || lacks('snapshot'),
  timeout: 1_800_000,
}, () => {
  let fleet: Fleet;

  before(async () => {
    fleet = new Fleet({ dir });
    fleet.createTenant({ id: 'alpha', subnet: '10.73.0.0/24' });
    await fleet.createPool({ tenant: 'alpha', id: 'web', memoryMiB: 128 });
    await fleet.createInstance('alpha/web', 'k1');
    await fleet.start(PATH);
  });

  after(async () => {
    for (const tenant of fleet.store.listTenants()) await fleet.destroyTenant(tenant.id).catch(() => {});
    await fleet.close();
    for (const leftover of processesNaming(dir)) await stopDetached(leftover, 0);
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `instance <operation>` through the CLI, which SIGKILLs itself at `point`. */
  async function killedAt(operation: string, point: string): Promise<void> {
    const run = await runCli([...fleetArgs, 'instance', operation, PATH], {
      [KILL_AT_ENV]: `${operation}:${point}`,
    });
    assert.equal(run.code, null, `${operation} did not reach "${point}" (exit ${run.code}): ${run.stderr}`);
  }

  /** The next CLI call repairs; then the record agrees with what runs and what is on disk. */
  async function repairedState(what: string): Promise<string> {
    const listed = await runCli([...fleetArgs, '--json', 'instance', 'list', 'alpha/web']);
    assert.equal(listed.code, 0, listed.stderr);
    const instance = fleet.instance(PATH);
    const vmDir = instanceDir(dir, instance.seq);
    assert.equal(instance.intent, undefined, `${what}: an intent is left`);
    const running = vmProcesses(vmDir).length > 0;
    const holds = instance.state === 'Running' || instance.state === 'Warm';
    assert.equal(running, holds, `${what}: ${instance.state} but its VMM ${running ? 'runs' : 'is gone'}`);
    if (instance.state === 'Running')
      assert.equal(await vmStatus(vmDir, PATH), 'running', `${what}: guest not running`);
    assert.equal(
      hasSleepState(vmDir),
      instance.state === 'Sleeping',
      `${what}: ${instance.state} with${instance.state === 'Sleeping' ? 'out' : ''} a sleep state`,
    );
    return instance.state;
  }

  async function running(): Promise<void> {
    const { state } = fleet.instance(PATH);
    if (state === 'Sleeping') await fleet.wake(PATH);
    else if (state !== 'Running') await fleet.start(PATH);
  }

  const output = async (script: string) => {
    const result = await fleet.exec(PATH, sh(script));
    assert.equal(result.status, 0, result.stderr.toString());
    return result.stdout.toString().trim();
  };

  for (const point of POINTS.wake) {
    it(`wake killed at "${point}": the guest's memory survives and the wake is told`, async () => {
      await running();
      await output(`echo ${JSON.stringify(point)} > /root/mark`);
      await fleet.sleep(PATH);
      const killedAtSeconds = Math.floor(Date.now() / 1000);
      await killedAt('wake', point);
      // Until the restored guest runs, the wake is undone; from then on it is finished.
      const resumed = POINTS.wake.indexOf(point) >= POINTS.wake.indexOf('device state loaded');
      assert.equal(await repairedState(`wake killed at ${point}`), resumed ? 'Running' : 'Sleeping');
      await running();
      assert.equal(await output('cat /root/mark'), point);
      const woke = Number(await output('cat /run/vmkit/woke'));
      assert.ok(woke >= killedAtSeconds - 1, `the guest was not told it woke (woke at ${woke})`);
    });
  }

  for (const point of POINTS.sleep) {
    it(`sleep killed at "${point}": the guest's memory survives`, async () => {
      await running();
      await output(`echo ${JSON.stringify(point)} > /root/mark`);
      await killedAt('sleep', point);
      const state = await repairedState(`sleep killed at ${point}`);
      assert.ok(state === 'Sleeping' || state === 'Running', `sleep killed at ${point} left it ${state}`);
      await running();
      assert.equal(await output('cat /root/mark'), point);
    });
  }

  for (const point of POINTS.start) {
    it(`start killed at "${point}": repaired to Stopped, the data disk kept`, async () => {
      await running();
      await output(`echo start-${point.replaceAll(' ', '-')} | dd of=/dev/vda 2>/dev/null; sync`);
      await fleet.stop(PATH);
      await killedAt('start', point);
      assert.equal(await repairedState(`start killed at ${point}`), 'Stopped');
      await running();
      assert.equal(await output('head -n 1 /dev/vda'), `start-${point.replaceAll(' ', '-')}`);
    });
  }

  for (const point of POINTS.stop) {
    it(`stop killed at "${point}": repaired to Stopped`, async () => {
      await running();
      await killedAt('stop', point);
      assert.equal(await repairedState(`stop killed at ${point}`), 'Stopped');
    });
  }
});

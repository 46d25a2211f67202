// `vmkit run --capture` of a three-machine script that partitions, heals, impairs and forwards:
// the run passes, and the VLAN's capture in the output folder reads back with the guests' traffic.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readPcap } from '../../src/index.js';
import { runTool } from '../../src/util/exec.js';
import { which } from '../../src/util/which.js';
import { lacks, runCli } from '../helpers.js';

describe('network scenario through the CLI', { skip: lacks('hostNetwork') }, () => {
  it('passes, and --capture leaves a pcap per VLAN in the output folder', async () => {
    const output = mkdtempSync(join(tmpdir(), 'vmkit-out-'));
    try {
      const { code, stderr } = await runCli([
        'run',
        '--capture',
        '--output',
        output,
        'test/fixtures/network-scenario.ts',
      ]);
      assert.equal(code, 0, stderr);
      assert.match(stderr, /5 subtests passed|passed in/, stderr);
      // The output folder also holds the run's events ledger; one capture per VLAN.
      assert.deepEqual(
        readdirSync(output).filter((name) => name.endsWith('.pcap')),
        ['vlan1.pcap'],
      );
      const { records } = readPcap(readFileSync(join(output, 'vlan1.pcap')));
      const ipv4 = records.filter(({ frame }) => frame.readUInt16BE(12) === 0x0800);
      const icmp = ipv4.filter(({ frame }) => frame[23] === 1);
      assert.ok(icmp.length >= 20, `the pings of the script, got ${icmp.length} ICMP frames`);
      assert.ok(await which('tcpdump'), 'tcpdump reads the capture back: scripts/setup.sh installs it');
      const { stdout } = await runTool('tcpdump', ['-r', join(output, 'vlan1.pcap'), '-n', 'icmp']);
      assert.match(stdout, /192\.168\.1\.\d > 192\.168\.1\.\d: ICMP echo request/);
    } finally {
      rmSync(output, { recursive: true, force: true });
    }
  });

  it('examples/partition.ts, as the README tells users to run it, passes', async () => {
    const { code, stderr } = await runCli(['run', 'examples/partition.ts']);
    assert.equal(code, 0, stderr);
    assert.match(stderr, /passed in/, stderr);
  });

  it('an output folder that cannot be made is bad input, before any machine starts', async () => {
    const { code, stderr } = await runCli([
      'run',
      '--capture',
      '--output',
      '/proc/nope/out',
      'test/fixtures/network-scenario.ts',
    ]);
    assert.equal(code, 2);
    assert.match(stderr, /^vmkit: --output \/proc\/nope\/out: cannot make or write the folder: ENOENT\n$/);
    assert.equal(existsSync('/proc/nope'), false);
  });
});

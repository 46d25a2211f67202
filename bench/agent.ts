// Fleet agent benchmark: API latency over mutual TLS (p50/p99 of node stats and instance list
// with 100 instances recorded: created, not started), reconcile time of a no-op document (in
// process and over the API), and of a scale-up that boots N tiny instances for real (TCG here).
// Prints one JSON object.
//
//   node --import tsx bench/agent.ts [--requests N] [--recorded N] [--scale N]

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connectAgent, Fleet, initCerts, loadDesired, startAgent } from 'vmkit';
import { loadAverages, log, median, parseIntOptions, round, runBenchmark } from './lib.js';

const USAGE = `usage: node --import tsx bench/agent.ts [--requests N] [--recorded N] [--scale N]
API latency with N instances recorded, reconcile of a no-op document and of an N-instance scale-up.
`;

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return round(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0);
};
const timed = async (work: () => Promise<unknown>) => {
  const start = performance.now();
  await work();
  return performance.now() - start;
};

const options = parseIntOptions(USAGE, {
  requests: { default: 300 },
  recorded: { default: 100 },
  scale: { default: 10, min: 0 },
});
if (options) {
  const dir = mkdtempSync('/tmp/vmkit-agent-bench-');
  const fleetDir = join(dir, 'f');
  const file = join(dir, 'fleet.json');
  const fleet = new Fleet({ dir: fleetDir, log });
  let server: Awaited<ReturnType<typeof startAgent>> | undefined;
  const document = (running: number) => ({
    version: 1,
    tenants: [
      {
        id: 'bench',
        subnet: '10.98.0.0/16',
        quotas: {
          maxRunning: Math.max(8, running),
          maxInstances: options.recorded + 10,
          maxMemoryMiB: 65_536,
          maxVcpus: 64,
        },
      },
    ],
    pools: [
      { tenant: 'bench', id: 'recorded' },
      { tenant: 'bench', id: 'up', desired: { running } },
    ],
  });
  await runBenchmark(
    async () => {
      writeFileSync(file, JSON.stringify(document(0)));
      await fleet.reconcile(loadDesired(file));
      log(`recording ${options.recorded} instances (created, not started)`);
      for (let n = 0; n < options.recorded; n++) await fleet.createInstance('bench/recorded');
      await initCerts(join(dir, 'certs'), { ca: true });
      server = await startAgent({
        fleetDir,
        certsDir: join(dir, 'certs'),
        desiredFile: file,
        port: 0,
        requestTimeoutMs: 600_000,
      });
      const certs = join(dir, 'certs');
      using client = await connectAgent({
        url: server.url,
        ca: `${certs}/ca.pem`,
        cert: `${certs}/client.pem`,
        key: `${certs}/client.key`,
        timeoutMs: 600_000,
      });
      const latency = async (call: () => Promise<unknown>) => {
        for (let n = 0; n < 20; n++) await call(); // warm up (JIT, kept-alive connection)
        const samples: number[] = [];
        for (let n = 0; n < options.requests; n++) samples.push(await timed(call));
        return { p50Ms: percentile(samples, 50), p99Ms: percentile(samples, 99), requests: samples.length };
      };
      const nodeStats = await latency(() => client.nodeStats());
      const instanceList = await latency(() => client.instances());
      log(`node stats p50 ${nodeStats.p50Ms} ms, instance list p50 ${instanceList.p50Ms} ms`);
      const noopInProcess: number[] = [];
      const noopOverApi: number[] = [];
      for (let n = 0; n < 5; n++) {
        noopInProcess.push(await timed(() => fleet.reconcile(loadDesired(file))));
        noopOverApi.push(await timed(() => client.reconcile()));
      }
      let scaleUpMs: number | null = null;
      let scaleDownMs: number | null = null;
      if (options.scale > 0) {
        writeFileSync(file, JSON.stringify(document(options.scale)));
        log(`scaling up to ${options.scale} running tiny instances (real boots)`);
        let report: Awaited<ReturnType<typeof client.reconcile>> | undefined;
        scaleUpMs = await timed(async () => {
          report = await client.reconcile();
        });
        if (report?.failed) throw new Error(`scale-up failed: ${JSON.stringify(report.phases)}`);
        writeFileSync(file, JSON.stringify(document(0)));
        scaleDownMs = await timed(() => client.reconcile());
      }
      const output = {
        benchmark: 'agent',
        recordedInstances: options.recorded,
        apiLatency: { nodeStats, instanceList },
        noopReconcileMs: {
          inProcess: median(noopInProcess.map(round)),
          overApi: median(noopOverApi.map(round)),
        },
        scaleUp: {
          instances: options.scale,
          reconcileMs: scaleUpMs === null ? null : round(scaleUpMs),
          perInstanceMs: scaleUpMs === null || options.scale === 0 ? null : round(scaleUpMs / options.scale),
          note: "created and started for real (tiny image, one after another, under the host's accelerator): the first start boots and saves the pool's base snapshot, the others start from it",
        },
        scaleDownReconcileMs: scaleDownMs === null ? null : round(scaleDownMs),
        loadAverage: loadAverages(),
      };
      process.stdout.write(`${JSON.stringify(output, null, 2)}\n`);
    },
    async () => {
      await server?.close();
      await fleet.destroyTenant('bench').catch(() => {});
      await fleet.close();
      rmSync(dir, { recursive: true, force: true });
    },
  );
}

import { type Command, Option } from 'commander';
import type { ClusterStatus } from '../../fleet/cluster/status.js';
import { wholeOption } from './fleet-common.js';

interface ClusterGlobals {
  etcd?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  json?: boolean;
  timeout?: number;
}

const CALL_TIMEOUT_MS = 15_000;

/** Connects to the cluster's etcd, runs `work` within the timeout, closes the connection. */
async function withCluster<T>(
  command: Command,
  what: string,
  work: (store: import('../../fleet/cluster/etcd.js').ClusterStore) => Promise<T>,
): Promise<T> {
  const { clusterCall, connectCluster, etcdEndpoints, etcdTls } = await import('../../fleet/cluster/etcd.js');
  const { withTimeout } = await import('../../util/time.js');
  const globals = command.optsWithGlobals<ClusterGlobals>();
  const endpoints = etcdEndpoints(globals.etcd);
  const tls = etcdTls(globals);
  if (tls) quietIpServerNameWarning();
  const store = connectCluster(endpoints, tls ? { tls } : {});
  try {
    return await withTimeout(
      clusterCall(store, what, () => work(store)),
      CALL_TIMEOUT_MS,
      `${what} (etcd at ${endpoints.join(', ')})`,
    );
  } finally {
    store.close();
  }
}

function statusText(status: ClusterStatus): string {
  const lines = [
    `document: ${status.revision ? `revision ${status.revision}` : 'none applied (vmkit cluster apply FILE)'}`,
    `scheduler: ${status.leader ?? 'none elected'}`,
    'nodes:',
    ...(status.nodes.length === 0 ? ['  (none)'] : []),
    ...status.nodes.flatMap((node) => [
      `  ${node.name}  ${node.alive ? 'alive' : 'DEAD '}  ${node.slots} slot(s), ${node.bookedMiB}/${node.capacity.memoryMiB} MiB booked, ${node.use.running} running  ${node.advertise}${node.drainedSince ? `  DRAINED since ${node.drainedSince}` : ''}`,
      ...node.failing.map(
        (f) => `    failing ${f.pool}: ${f.converges} converge(s) in a row since ${f.since}: ${f.error}`,
      ),
    ]),
    'instances:',
    ...(status.instances.length === 0 ? ['  (none)'] : []),
    ...status.instances.map((instance) => `  ${instance.path}  ${instance.state}  on ${instance.node}`),
  ];
  if (status.moves.length)
    lines.push(
      'moves:',
      ...status.moves.map(
        (m) =>
          `  ${m.slot}${m.instance ? ` (${m.instance})` : ''}  ${m.from} -> ${m.to}  ${m.failed ? `FAILED: ${m.failed}` : `under way since ${m.since}`}`,
      ),
    );
  if (status.pending.length)
    lines.push(
      'pending (on no alive node):',
      ...status.pending.map((p) => `  ${p.slot}  ${p.memoryMiB} MiB  ${p.reason}`),
    );
  return lines.join('\n');
}

/** `vmkit cluster ...`: the fleet across hosts, its desired state and status in etcd. */
export function registerClusterCommands(program: Command): void {
  const cluster = program
    .command('cluster')
    .description(
      'a fleet across hosts: the desired state in etcd, placed on the nodes whose agents run with --etcd',
    )
    .option('--etcd <endpoints>', 'etcd client URLs, comma-separated (default $VMKIT_ETCD)');
  for (const option of etcdTlsOptions()) cluster.addOption(option);
  cluster.option('--json', 'print JSON');
  cluster
    .command('apply')
    .description(
      "store a desired-state document (the one `vmkit fleet reconcile` reads) as the cluster's; the scheduler places its instances",
    )
    .argument('<file>', 'the document (JSON or YAML)')
    .action(async (file: string, _options, command: Command) => {
      const { loadDesired } = await import('../../fleet/desired/schema.js');
      const { applyDocument } = await import('../../fleet/cluster/status.js');
      const doc = loadDesired(file);
      const revision = await withCluster(command, 'storing the document', (store) =>
        applyDocument(store, doc),
      );
      const json = Boolean(command.optsWithGlobals<ClusterGlobals>().json);
      process.stdout.write(
        json ? `${JSON.stringify({ revision, file }, null, 2)}\n` : `applied ${file}: revision ${revision}\n`,
      );
    });
  cluster
    .command('drain')
    .description(
      "move every instance off a node and place none there until `uncordon`: each is slept, shipped and woken on another node with its files and processes (one that cannot be, such as a disk-image pool's, starts cold there)",
    )
    .argument('<node>', 'the node, as `cluster status` names it')
    .option('--no-wait', 'return once the drain is recorded, not once the node holds no slot')
    .option('--timeout <seconds>', 'how long to wait for the node to hold no slot (default 300)', wholeOption)
    .action(async (node: string, options: { wait: boolean; timeout?: number }, command: Command) => {
      const { checkNodeName } = await import('../../fleet/cluster/etcd.js');
      const { drainNode, drainProgress } = await import('../../fleet/cluster/drain.js');
      checkNodeName(node);
      await withCluster(command, `draining node ${node}`, (store) => drainNode(store, node));
      const json = Boolean(command.optsWithGlobals<ClusterGlobals>().json);
      const say = (line: string) => process.stderr.write(`${line}\n`);
      say(`node ${node} is drained: no slot goes there; the scheduler moves the ones it holds`);
      if (!options.wait) return;
      const timeoutS = options.timeout ?? 300;
      const deadline = Date.now() + timeoutS * 1000;
      let last = '';
      for (;;) {
        const progress = await withCluster(command, 'reading the drain', (store) =>
          drainProgress(store, node),
        );
        const now = `${progress.slots.length} slot(s) left, ${progress.running} running`;
        if (now !== last) say(`node ${node}: ${now}`);
        last = now;
        if (progress.slots.length === 0 && progress.running === 0) {
          if (json) process.stdout.write(`${JSON.stringify({ node, drained: true }, null, 2)}\n`);
          else
            process.stdout.write(`node ${node} drained (vmkit cluster uncordon ${node} to use it again)\n`);
          return;
        }
        if (Date.now() > deadline) {
          const { ClusterError } = await import('../../errors.js');
          throw new ClusterError(
            `node ${node} still holds ${progress.slots.length} slot(s) after ${timeoutS} s (${progress.slots.join(', ') || 'its instances are still stopping'}): a slot moves once another node has room for it; the drain stays recorded`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    });
  cluster
    .command('move')
    .description(
      "move one instance to another node with its state: slept, shipped over the agents' mutual TLS, woken there",
    )
    .argument('<instance>', 'the instance, <tenant>/<pool>/<id> as `cluster status` lists it')
    .argument('<node>', 'the node it goes to')
    .option('--no-wait', 'return once the move is asked, not once it is done')
    .option('--timeout <seconds>', 'how long to wait for the move (default 300)', wholeOption)
    .action(
      async (
        instance: string,
        node: string,
        options: { wait: boolean; timeout?: number },
        command: Command,
      ) => {
        const { checkNodeName } = await import('../../fleet/cluster/etcd.js');
        const { forgetMove, moveProgress, requestMove } = await import('../../fleet/cluster/move-request.js');
        const { ClusterError } = await import('../../errors.js');
        checkNodeName(node);
        const { slot, from } = await withCluster(command, `asking the move of ${instance}`, (store) =>
          requestMove(store, instance, node),
        );
        process.stderr.write(`${instance} (slot ${slot}) moves from ${from} to ${node}\n`);
        if (!options.wait) return;
        const timeoutS = options.timeout ?? 300;
        const deadline = Date.now() + timeoutS * 1000;
        for (;;) {
          const progress = await withCluster(command, 'reading the move', (store) =>
            moveProgress(store, slot, node),
          );
          if (progress.done) {
            const json = Boolean(command.optsWithGlobals<ClusterGlobals>().json);
            process.stdout.write(
              json
                ? `${JSON.stringify({ instance, slot, from, to: node, moved: true }, null, 2)}\n`
                : `${instance} moved from ${from} to ${node} with its state\n`,
            );
            return;
          }
          if (progress.failed) {
            await withCluster(command, 'removing the failed move', (store) => forgetMove(store, slot));
            throw new ClusterError(`${instance} did not move to ${node}: ${progress.failed}`);
          }
          if (Date.now() > deadline)
            throw new ClusterError(
              `${instance} has not moved to ${node} after ${timeoutS} s: the move stays asked (\`vmkit cluster status\` shows it)`,
            );
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      },
    );
  cluster
    .command('uncordon')
    .description('end the drain of a node: it takes slots again (those that moved stay where they are)')
    .argument('<node>')
    .action(async (node: string, _options, command: Command) => {
      const { checkNodeName } = await import('../../fleet/cluster/etcd.js');
      const { uncordonNode } = await import('../../fleet/cluster/drain.js');
      checkNodeName(node);
      const ended = await withCluster(command, `ending the drain of ${node}`, (store) =>
        uncordonNode(store, node),
      );
      process.stdout.write(ended ? `node ${node} takes slots again\n` : `node ${node} was not drained\n`);
    });
  cluster
    .command('status')
    .description(
      "the cluster's nodes (alive or not, capacity, use), instances, scheduler and document revision",
    )
    .action(async (_options, command: Command) => {
      const { clusterStatus } = await import('../../fleet/cluster/status.js');
      const status = await withCluster(command, 'reading the cluster', clusterStatus);
      const json = Boolean(command.optsWithGlobals<ClusterGlobals>().json);
      process.stdout.write(json ? `${JSON.stringify(status, null, 2)}\n` : `${statusText(status)}\n`);
    });
}

/** TLS to etcd, for `vmkit cluster` and `vmkit fleet agent serve --etcd`. */
export function etcdTlsOptions(): Option[] {
  return [
    new Option(
      '--etcd-ca <file>',
      "TLS to etcd: the CA that signed etcd's certificate (https:// endpoints)",
    ).env('VMKIT_ETCD_CA'),
    new Option('--etcd-cert <file>', "TLS to etcd: this client's certificate, where etcd asks for one").env(
      'VMKIT_ETCD_CERT',
    ),
    new Option('--etcd-key <file>', 'TLS to etcd: the key of --etcd-cert').env('VMKIT_ETCD_KEY'),
  ];
}

/**
 * Over TLS to an etcd at an IP address (https://10.0.0.5:2379), gRPC passes that address as the TLS
 * server name and Node warns about it (DEP0123) at every connection; the certificate is checked
 * against the address all the same. The CLI leaves that one warning out.
 */
export function quietIpServerNameWarning(): void {
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
    const [typeOrOptions, code] = rest;
    const named = typeof typeOrOptions === 'object' ? (typeOrOptions as { code?: string })?.code : code;
    if (named === 'DEP0123') return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}

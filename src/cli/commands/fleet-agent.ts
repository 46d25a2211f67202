import { type Command, Option } from 'commander';
import { ConfigError } from '../../errors.js';
import { AGENT_OPS, type AgentOp } from '../../fleet/agent/api.js';
import {
  certPath,
  certStatus,
  defaultCertsDir,
  initCerts,
  keyPath,
  rotateCerts,
} from '../../fleet/agent/certs.js';
import { connectAgent } from '../../fleet/agent/client.js';
import { startAgent } from '../../fleet/agent/server.js';
import type { NodeJoin } from '../../fleet/cluster/node-join.js';
import { defaultFleetDir } from '../../fleet/state/db.js';
import { parseAddress } from '../../fleet/state/ids.js';
import { openResources, shutDownAgent } from './agent-shutdown.js';
import { etcdTlsOptions, quietIpServerNameWarning } from './cluster.js';
import { builderOf, type FleetGlobals, output, wholeOption } from './fleet-common.js';

const certsDirOf = (command: Command): string =>
  command.opts().certs ??
  defaultCertsDir(command.optsWithGlobals<FleetGlobals>().fleetDir ?? defaultFleetDir());
const jsonOf = (command: Command) => Boolean(command.optsWithGlobals<FleetGlobals>().json);
const certsOption = () =>
  new Option('--certs <dir>', 'the certificates folder (default <fleet-dir>/agent/certs)');

function listen(value: string): { host: string; port: number } {
  const match = /^(.*):(\d{1,5})$/.exec(value);
  const port = Number(match?.[2]);
  if (!match || port > 65_535)
    throw new ConfigError(`--listen ${JSON.stringify(value)}: expected host:port, e.g. 127.0.0.1:7443`);
  return { host: (match[1] as string).replace(/^\[(.*)\]$/, '$1') || '127.0.0.1', port };
}

function printStatus(command: Command, dir: string): void {
  const status = certStatus(dir);
  output(jsonOf(command), status, () =>
    status
      .map((s) =>
        s.present
          ? `${s.role}: ${s.subject}, valid ${s.validFrom} to ${s.validTo} (${s.expired ? 'EXPIRED' : `${s.daysLeft} days left`})${s.role !== 'ca' && !s.signedByCa ? ', NOT signed by the CA' : ''}${s.keyMode ? `, key mode ${s.keyMode}` : ''}`
          : `${s.role}: missing (${s.file})`,
      )
      .join('\n'),
  );
}

/** The CLI's names for the API's operations (kebab-case). */
const OP_NAMES: Record<string, AgentOp> = Object.fromEntries(
  Object.keys(AGENT_OPS).map((op) => [op.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), op as AgentOp]),
);

/** `vmkit fleet agent ...`: the desired-state agent behind mutual TLS, its certificates, and its client. */
export function registerAgentCommands(fleet: Command): void {
  const agent = fleet
    .command('agent')
    .description('the fleet agent: an HTTPS API with mutual TLS and a reconcile loop');
  const certs = agent
    .command('certs')
    .description("the agent's CA, server and client certificates (openssl)");
  certs
    .command('init')
    .description('issue server and client certificates; with --ca, make a new CA first')
    .option('--ca', 'make a new CA')
    .option('--days <n>', 'validity of the server and client certificates (default 90)', wholeOption)
    .option(
      '--host <name...>',
      'names and addresses the server certificate covers (default localhost, 127.0.0.1, ::1, this host)',
    )
    .addOption(certsOption())
    .action(async (options, command: Command) => {
      const dir = certsDirOf(command);
      await initCerts(dir, { ca: options.ca, days: options.days, hosts: options.host });
      printStatus(command, dir);
    });
  certs
    .command('rotate')
    .description(
      'new server and client keys and certificates from the same CA; a running agent picks them up',
    )
    .option('--days <n>', 'validity (default 90)', wholeOption)
    .option('--host <name...>', 'names and addresses the server certificate covers')
    .addOption(certsOption())
    .action(async (options, command: Command) => {
      const dir = certsDirOf(command);
      await rotateCerts(dir, { days: options.days, hosts: options.host });
      printStatus(command, dir);
    });
  certs
    .command('status')
    .description('each certificate with its validity dates')
    .addOption(certsOption())
    .action((_options, command: Command) => printStatus(command, certsDirOf(command)));

  const [etcdCa, etcdCert, etcdKey] = etcdTlsOptions() as [Option, Option, Option];
  agent
    .command('serve')
    .description(
      'serve the API over HTTPS with mutual TLS; reconcile from --desired periodically and on request',
    )
    .option('--desired <file>', 'the desired-state file (JSON or YAML)')
    .option(
      '--etcd <endpoints>',
      "join a cluster: etcd client URLs, comma-separated (default $VMKIT_ETCD when --node is given); the document is this node's share of the cluster's",
    )
    .option('--node <name>', 'this node in the cluster (default: the host name)')
    .option('--advertise <url>', 'the URL other hosts reach this agent at (default: where it listens)')
    .option(
      '--memory-mib <n>',
      'the memory the cluster may book here (default: the host memory)',
      wholeOption,
    )
    .option(
      '--lease-ttl <seconds>',
      "the node's lease: dead to the cluster after this without renewal (default 10)",
      wholeOption,
    )
    .addOption(etcdCa)
    .addOption(etcdCert)
    .addOption(etcdKey)
    .option('--listen <host:port>', 'where to listen (default 127.0.0.1:7443)', listen)
    .option('--interval <seconds>', 'reconcile this often (default 60; 0: only on request)', wholeOption)
    .option('--body-limit <bytes>', 'largest request body (default 65536)', wholeOption)
    .option('--request-timeout <ms>', 'a request must arrive whole within this (default 30000)', wholeOption)
    .option(
      '--max-exec-output <bytes>',
      "an exec's stdout and stderr together, at most (default 8 MiB); past it the command is killed (413)",
      wholeOption,
    )
    .option(
      '--shutdown-timeout <seconds>',
      'on SIGTERM or SIGINT, end anyway after this long, saying what was still going (default 25)',
      wholeOption,
    )
    .addOption(certsOption())
    .action(async (options, command: Command) => {
      const log = (line: string) => process.stderr.write(`vmkit agent: ${line}\n`);
      const fleetDir = command.optsWithGlobals<FleetGlobals>().fleetDir ?? defaultFleetDir();
      const certsDir = certsDirOf(command);
      const cluster = await clusterOf(options, fleetDir, certsDir);
      let join: NodeJoin | undefined;
      const server = await startAgent({
        fleetDir: command.optsWithGlobals<FleetGlobals>().fleetDir,
        ...builderOf(command),
        certsDir: certsDirOf(command),
        desiredFile: options.desired,
        ...(cluster
          ? {
              desiredSource: cluster.share,
              upgrade: cluster.upgrade(log),
              routes: cluster.routes(log),
              readOnly: () => (join ? join.readOnlyReason() : 'the node is starting'),
            }
          : {}),
        reconcileIntervalMs: (options.interval ?? 60) * 1000,
        ...(options.listen ?? {}),
        bodyLimit: options.bodyLimit,
        requestTimeoutMs: options.requestTimeout,
        maxExecOutputBytes: options.maxExecOutput,
        log,
      });
      process.on('SIGHUP', () => server.reloadCertificates());
      join = cluster?.join(server, log);
      let refused: Error | undefined;
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (why: string) => {
          if (stopping) return;
          stopping = true;
          shutDownAgent({
            why,
            join,
            closeServer: () => server.close(),
            log,
            deadlineMs: (options.shutdownTimeout ?? 25) * 1000,
          }).then(resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
        // A refusal that trying again cannot mend (the node's name is another agent's) ends the agent.
        join?.joined.catch((error: Error) => {
          refused = error;
          stop(`not joining the cluster: ${error.message}`);
        });
      });
      // Everything vmkit started has ended: a handle a library left open must not keep the agent.
      setTimeout(() => {
        log(`exiting although something was still open (${openResources()})`);
        process.exit(refused ? 1 : 0);
      }, 2000).unref();
      if (refused) throw refused;
    });

  agent
    .command('call')
    .description(`call the agent: ${Object.keys(OP_NAMES).join(', ')}`)
    .argument('<op>')
    .argument(
      '[args...]',
      'instances [tenant[/pool]]; wake|sleep <t/p/i>; exec <t/p/i> -- <command...>; audit <tenant>',
    )
    .option('--url <url>', 'the agent (default $VMKIT_AGENT_URL, else https://127.0.0.1:7443)')
    .option('--tail <n>', 'audit: only the last N events', wholeOption)
    .option('--prune', 'reconcile: destroy what the document no longer lists')
    .option('--dry-run', 'reconcile: only plan')
    .addOption(certsOption())
    .action(async (name: string, args: string[], options, command: Command) => {
      const op = OP_NAMES[name];
      if (!op)
        throw new ConfigError(
          `unknown agent operation ${JSON.stringify(name)} (known: ${Object.keys(OP_NAMES).join(', ')})`,
        );
      const dir = certsDirOf(command);
      const client = await connectAgent({
        url: options.url ?? process.env.VMKIT_AGENT_URL ?? 'https://127.0.0.1:7443',
        ca: `${dir}/ca.pem`,
        cert: `${dir}/client.pem`,
        key: `${dir}/client.key`,
      });
      try {
        const result = await callOp(client, op, args, options);
        if (op === 'exec' && !jsonOf(command)) {
          const exec = result as { status: number; stdout: string; stderr: string };
          process.stdout.write(exec.stdout);
          process.stderr.write(exec.stderr);
          process.exitCode = exec.status;
          return;
        }
        output(jsonOf(command), result, () => JSON.stringify(result, null, 2));
      } finally {
        client.close();
      }
    });
}

function callOp(
  client: Awaited<ReturnType<typeof connectAgent>>,
  op: AgentOp,
  args: string[],
  options: { tail?: number; prune?: boolean; dryRun?: boolean },
): Promise<unknown> {
  const first = args[0] ?? '';
  const need = (what: string) => {
    if (!first) throw new ConfigError(`agent call ${op}: needs ${what}`);
    return first;
  };
  switch (op) {
    case 'reconcile':
      return client.reconcile({ prune: options.prune, dryRun: options.dryRun });
    case 'instances': {
      if (!first) return client.instances();
      const parts = first.split('/');
      const address = parseAddress(first, parts.length === 2 ? 2 : 1);
      return client.instances({ tenant: address.tenant, pool: address.pool || undefined });
    }
    case 'wake':
    case 'sleep':
      return client[op](need('an instance address <tenant>/<pool>/<instance>'));
    case 'exec': {
      const command = args.slice(1);
      if (command.length === 0) throw new ConfigError('agent call exec: needs <t/p/i> -- <command...>');
      return client.exec(need('an instance address'), command);
    }
    case 'audit':
      return client.audit(need('a tenant'), { tail: options.tail });
    default:
      return client.call(op);
  }
}

/** With --etcd (or --node and $VMKIT_ETCD): the cluster this agent joins once it listens. */
async function clusterOf(
  options: {
    etcd?: string;
    node?: string;
    desired?: string;
    advertise?: string;
    memoryMib?: number;
    leaseTtl?: number;
    etcdCa?: string;
    etcdCert?: string;
    etcdKey?: string;
  },
  fleetDir: string,
  certsDir: string,
) {
  if (options.etcd === undefined && options.node === undefined) return undefined;
  if (options.desired)
    throw new ConfigError(
      "--desired and --etcd: a cluster's agent reconciles the cluster's document, not a file",
    );
  const { hostname } = await import('node:os');
  const { checkNodeName, connectCluster, etcdEndpoints, etcdTls } = await import(
    '../../fleet/cluster/etcd.js'
  );
  const { clusterRoutes, clusterShareSource } = await import('../../fleet/cluster/agent-node.js');
  const node = checkNodeName(options.node ?? hostname());
  if (options.leaseTtl !== undefined && (options.leaseTtl < 2 || options.leaseTtl > 3600))
    throw new ConfigError(`--lease-ttl ${options.leaseTtl}: expected 2 to 3600 seconds`);
  if (options.memoryMib !== undefined && options.memoryMib < 64)
    throw new ConfigError(`--memory-mib ${options.memoryMib}: expected at least 64`);
  const { joinWhenReachable } = await import('../../fleet/cluster/node-join.js');
  const { tunnelUpgradeHandler } = await import('../../fleet/cluster/tunnel.js');
  const tls = etcdTls(options);
  if (tls) quietIpServerNameWarning();
  const store = connectCluster(etcdEndpoints(options.etcd), tls ? { tls } : {});
  const agentTls = {
    ca: certPath(certsDir, 'ca'),
    cert: certPath(certsDir, 'client'),
    key: keyPath(certsDir, 'client'),
  };
  return {
    upgrade: (log: (line: string) => void) => tunnelUpgradeHandler(fleetDir, log),
    routes: (log: (line: string) => void) => clusterRoutes({ store, node, fleetDir, tls: agentTls, log }),
    share: clusterShareSource(store, node),
    join: (server: Awaited<ReturnType<typeof startAgent>>, log: (line: string) => void): NodeJoin => {
      const join = joinWhenReachable(server, {
        store,
        node,
        ...(options.advertise ? { advertise: options.advertise } : {}),
        ...(options.memoryMib !== undefined ? { memoryMiB: options.memoryMib } : {}),
        ...(options.leaseTtl !== undefined ? { ttlSeconds: options.leaseTtl } : {}),
        tunnels: agentTls,
        log,
      });
      return {
        ...join,
        async leave(beforeLapse) {
          try {
            await join.leave(beforeLapse);
          } finally {
            store.close();
          }
        },
      };
    },
  };
}

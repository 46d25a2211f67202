// A real etcd cluster on loopback ports for the cluster tests: Debian's etcd-server binary (from
// the PATH, else downloaded once from Debian's archive into vmkit's cache, no root needed).
import { type ChildProcess, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { extractDeb, fetchDeb, resolvePackages } from '../src/images/debian.js';
import { processesNaming, stopDetached } from '../src/runtime/detached.js';
import { runTool } from '../src/util/exec.js';
import { cacheDir } from '../src/util/paths.js';
import { ensurePrivateDir } from '../src/util/private.js';
import { processRunsSync } from '../src/util/scratch.js';
import { which } from '../src/util/which.js';

/** The etcd server program: on the PATH, else Debian's etcd-server unpacked into the cache. */
export async function etcdBinary(): Promise<string> {
  const onPath = await which('etcd');
  if (onPath) return onPath;
  const pkg = (await resolvePackages(['etcd-server'])).get('etcd-server');
  if (!pkg) throw new Error('apt knows no etcd-server package');
  const dir = join(cacheDir(), 'tools', `etcd-server-${pkg.version.replace(/[^\w.+-]/g, '_')}`);
  const binary = join(dir, 'usr', 'bin', 'etcd');
  if (existsSync(binary)) return binary;
  // A fresh cache has neither folder yet.
  ensurePrivateDir(join(cacheDir(), 'debs'));
  ensurePrivateDir(join(cacheDir(), 'tools'));
  const deb = await fetchDeb(pkg, join(cacheDir(), 'debs'), () => {});
  const scratch = `${dir}.${process.pid}`;
  rmSync(scratch, { recursive: true, force: true });
  await extractDeb(deb, scratch);
  try {
    renameSync(scratch, dir);
  } catch (error) {
    rmSync(scratch, { recursive: true, force: true });
    if (!existsSync(binary)) throw error; // another run unpacked it first: use that
  }
  return binary;
}

/**
 * A folder for one run's cluster, `/tmp/<prefix><pid>-XXXXXX`. The folders of this user's runs
 * whose process is gone (killed before their `after`) are reaped first: every process naming one
 * (etcd members, agents, VMMs, switches) is ended and the folder removed. Another user's are left
 * alone (their pids mean nothing here, and their folders are not ours to remove).
 */
export async function clusterRunDir(
  prefix: string,
  cleanUp: (leftover: string) => Promise<void> = async () => {},
): Promise<string> {
  for (const name of readdirSync('/tmp')) {
    const match = new RegExp(`^${prefix}(\\d+)-`).exec(name);
    if (!match || processRunsSync(Number(match[1]))) continue;
    const leftover = join('/tmp', name);
    const owner = (() => {
      try {
        return statSync(leftover).uid;
      } catch {
        return undefined; // gone meanwhile
      }
    })();
    if (owner !== process.getuid?.()) continue;
    for (const process of processesNaming(`${leftover}/`)) await stopDetached(process, 0);
    await cleanUp(leftover).catch(() => {});
    rmSync(leftover, { recursive: true, force: true });
  }
  return mkdtempSync(join('/tmp', `${prefix}${process.pid}-`));
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface EtcdMember {
  name: string;
  clientUrl: string;
  process: ChildProcess;
  log: string;
}

export interface EtcdCluster {
  members: EtcdMember[];
  /** The client URLs, comma-separated, as --etcd takes them. */
  endpoints: string;
  /** The name of the member that leads etcd's raft now. */
  leader(): Promise<string>;
  /** SIGKILLs a member. */
  kill(name: string): Promise<void>;
  /** Starts a killed member again on its data folder. */
  restart(name: string): void;
  stop(): Promise<void>;
}

/** Resolves when `child` has exited; rejects, naming `what`, when it is still running after `timeoutMs`. */
export function exited(child: ChildProcess, what: string, timeoutMs = 30_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} still runs after ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** TLS for the members' client URLs: etcd's certificate, and the CA its clients' certificates must come from. */
export interface EtcdServerTls {
  ca: string;
  cert: string;
  key: string;
  /** The client certificate and key the harness itself uses to ask for the members' status. */
  client: { cert: string; key: string };
}

/**
 * TLS for a test etcd from the agents' CA in `certsDir` (vmkit fleet agent certs init): a
 * certificate for 127.0.0.1 with both server and client use (etcd's gateway dials etcd itself with
 * it), and the agents' client certificate for the harness's status calls.
 */
export async function etcdServerTls(certsDir: string, outDir: string): Promise<EtcdServerTls> {
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  const cert = join(outDir, 'etcd.pem');
  const key = join(outDir, 'etcd.key');
  const csr = join(outDir, 'etcd.csr');
  const ext = join(outDir, 'etcd.ext');
  writeFileSync(
    ext,
    'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n',
  );
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await runTool('openssl', ['req', '-new', ...newKey, '-keyout', key, '-out', csr, '-subj', '/CN=etcd']);
  await runTool('openssl', [
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    join(certsDir, 'ca.pem'),
    '-CAkey',
    join(certsDir, 'ca.key'),
    '-set_serial',
    '0x1',
    '-days',
    '2',
    '-extfile',
    ext,
    '-out',
    cert,
  ]);
  return {
    ca: join(certsDir, 'ca.pem'),
    cert,
    key,
    client: { cert: join(certsDir, 'client.pem'), key: join(certsDir, 'client.key') },
  };
}

/** A member's status (its id and the leader it knows), over plain HTTP or TLS with a client certificate. */
function status(
  clientUrl: string,
  tls?: EtcdServerTls,
): Promise<{ header: { member_id: string }; leader: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL('/v3/maintenance/status', clientUrl);
    const options = {
      method: 'POST',
      timeout: 2000,
      ...(tls
        ? {
            ca: readFileSync(tls.ca),
            cert: readFileSync(tls.client.cert),
            key: readFileSync(tls.client.key),
          }
        : {}),
    };
    const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, options, (response) => {
      let body = '';
      response.on('data', (chunk) => {
        body += chunk;
      });
      response.on('end', () => {
        try {
          resolve(JSON.parse(body));
        } catch (error) {
          reject(error);
        }
      });
    });
    request.on('timeout', () => request.destroy(new Error(`${url}: no answer within 2 s`)));
    request.on('error', reject);
    request.end('{}');
  });
}

/** Starts `size` etcd members on loopback ports, data in `dir`; resolves once a leader is elected. */
export async function startEtcdCluster(
  dir: string,
  size = 3,
  timeoutMs = 60_000,
  tls?: EtcdServerTls,
): Promise<EtcdCluster> {
  const scheme = tls ? 'https' : 'http';
  // With TLS, clients need a certificate from the CA (etcd's --client-cert-auth).
  const tlsArgs = tls
    ? [
        `--cert-file=${tls.cert}`,
        `--key-file=${tls.key}`,
        '--client-cert-auth',
        `--trusted-ca-file=${tls.ca}`,
      ]
    : [];
  const binary = await etcdBinary();
  const ports = [];
  for (let i = 0; i < size; i++) ports.push({ client: await freePort(), peer: await freePort() });
  const initial = ports.map((p, i) => `m${i}=http://127.0.0.1:${p.peer}`).join(',');
  const token = `vmkit-test-${process.pid}-${Date.now()}`;
  const spawnMember = (args: string[], log: string) => {
    const out = openSync(log, 'a');
    const child = spawn(binary, args, { stdio: ['ignore', out, out] });
    closeSync(out); // the child has its own copy
    return child;
  };
  const argsOf = new Map<string, string[]>();
  const members: EtcdMember[] = ports.map((p, i) => {
    const name = `m${i}`;
    const data = join(dir, name);
    mkdirSync(data, { recursive: true, mode: 0o700 });
    const log = join(dir, `${name}.log`);
    const args = [
      `--name=${name}`,
      `--data-dir=${data}`,
      `--listen-client-urls=${scheme}://127.0.0.1:${p.client}`,
      `--advertise-client-urls=${scheme}://127.0.0.1:${p.client}`,
      ...tlsArgs,
      `--listen-peer-urls=http://127.0.0.1:${p.peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${p.peer}`,
      `--initial-cluster=${initial}`,
      `--initial-cluster-token=${token}`,
      '--initial-cluster-state=new',
    ];
    argsOf.set(name, args);
    return { name, clientUrl: `${scheme}://127.0.0.1:${p.client}`, process: spawnMember(args, log), log };
  });
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.clientUrl).join(','),
    async leader() {
      for (const member of members) {
        if (member.process.exitCode !== null || member.process.signalCode !== null) continue;
        try {
          const answer = await status(member.clientUrl, tls);
          const ids = await Promise.all(
            members.map(async (m) => [
              m.name,
              (await status(m.clientUrl, tls).catch(() => undefined))?.header.member_id,
            ]),
          );
          const found = ids.find(([, id]) => id === answer.leader);
          if (found) return found[0] as string;
        } catch {}
      }
      throw new Error('no etcd member names a leader');
    },
    async kill(name) {
      const member = members.find((m) => m.name === name);
      member?.process.kill('SIGKILL');
      if (member) await exited(member.process, `etcd member ${name}`);
    },
    restart(name) {
      const member = members.find((m) => m.name === name);
      if (member) member.process = spawnMember(argsOf.get(name) as string[], member.log);
    },
    async stop() {
      for (const member of members) member.process.kill('SIGKILL');
      await Promise.all(members.map((m) => exited(m.process, `etcd member ${m.name}`)));
    },
  };
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      await cluster.leader();
      return cluster;
    } catch (error) {
      if (Date.now() > until) {
        await cluster.stop();
        const tails = members.map((m) => `${m.name}: ${readFileSync(m.log, 'utf8').slice(-800)}`).join('\n');
        throw new Error(
          `etcd cluster not up within ${timeoutMs} ms (${(error as Error).message}):\n${tails}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** A cluster agent started as the CLI (`vmkit fleet agent serve --etcd ...`), its stderr kept. */
export interface AgentProcess {
  child: ChildProcess;
  log: () => string;
}

/**
 * Starts `vmkit fleet agent serve` for node `node` of the cluster at `endpoints`, on a free port,
 * reconciling only on changes (`--interval 3600`); `args` are added (`--lease-ttl 4`, say).
 */
export function startClusterAgent(
  cli: string,
  options: {
    fleetDir: string;
    endpoints: string;
    node: string;
    certs: string;
    args?: string[];
    env?: NodeJS.ProcessEnv;
  },
): AgentProcess {
  const args = ['fleet', '--fleet-dir', options.fleetDir, 'agent', 'serve', '--etcd', options.endpoints];
  args.push(
    '--node',
    options.node,
    '--certs',
    options.certs,
    '--listen',
    '127.0.0.1:0',
    '--interval',
    '3600',
  );
  const child = spawn(process.execPath, [cli, ...args, ...(options.args ?? [])], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...options.env },
  });
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  return { child, log: () => stderr };
}

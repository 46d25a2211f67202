import { type FSWatcher, readFileSync, watch } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { createSecureContext } from 'node:tls';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ClusterError, ConfigError } from '../../errors.js';
import { MAX_TIMER_MS } from '../../util/time.js';
import { parseInput, wholeNumber } from '../../util/validate.js';
import type { ReconcileReport } from '../desired/reconcile.js';
import { type DesiredDocument, loadDesired } from '../desired/schema.js';
import { Fleet } from '../fleet.js';
import type { FleetBuilder } from '../images/pool-image.js';
import { RefusedError } from '../state/lifecycle.js';
import { OutputLimitError } from '../vmm/vm-exec.js';
import { openApiDocument } from './api.js';
import { certPath, keyPath } from './certs.js';
import { registerRoutes } from './routes.js';

export interface AgentServerOptions {
  /** The fleet folder (default as for the CLI). */
  fleetDir?: string;
  /** Where recipe pools' images are built (default "vm": an ephemeral builder VM, no root needed). */
  builder?: FleetBuilder;
  /** The folder with ca.pem, server.pem and server.key (from `vmkit fleet agent certs init`). */
  certsDir: string;
  /** The desired-state file reconciled periodically and on request. */
  desiredFile?: string;
  /**
   * Instead of a file: where the document comes from (a cluster node's share), reconciled with
   * prune when `prune` says so; undefined while there is none yet (nothing is done).
   */
  desiredSource?: () => Promise<{ doc: DesiredDocument; source: string; prune?: boolean } | undefined>;
  /**
   * While this gives a reason, the API is read-only: requests other than GET are refused with 503
   * and the reason, and no periodic reconcile runs (a cluster node that has not joined yet).
   */
  readOnly?: () => string | undefined;
  /** Every this many milliseconds, reconcile from the file (0: only on request). */
  reconcileIntervalMs?: number;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** More routes (a cluster node's moves), registered with the API's: given the fleet and `exclusive`. */
  routes?: (app: FastifyInstance, fleet: Fleet, exclusive: Exclusive) => void;
  /** Answers HTTP upgrades on the agent's port (after the mutual TLS handshake): a cluster's tunnels. */
  upgrade?: (request: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Largest request body accepted, in bytes. */
  bodyLimit?: number;
  /** A request must arrive whole within this time (slow clients are cut off). */
  requestTimeoutMs?: number;
  /** An exec's stdout and stderr together, at most (default 8 MiB); past it: killed, 413. */
  maxExecOutputBytes?: number;
  /** The TLS handshake must finish within this time. */
  handshakeTimeoutMs?: number;
  log?: (line: string) => void;
}

/**
 * Runs `work` alone: after the reconcile or other exclusive work in progress, before the next.
 * With `waitMs`, refused (ClusterError) if its turn has not come by then.
 */
export type Exclusive = <T>(work: () => Promise<T>, waitMs?: number) => Promise<T>;

export interface AgentServer {
  url: string;
  port: number;
  fleet: Fleet;
  /** Reconciles now (after one in progress ends). */
  reconcileNow(options?: {
    prune?: boolean;
    dryRun?: boolean;
  }): Promise<ReconcileReport & { document: string; at: string }>;
  exclusive: Exclusive;
  /** Reads the certificate files again and serves new connections with them. */
  reloadCertificates(): void;
  /** Stops accepting, finishes requests and a reconcile in flight, leaves instances as they are. */
  close(): Promise<void>;
}

const NOTHING_TO_RECONCILE: ReconcileReport = {
  dryRun: false,
  repairs: [],
  phases: [],
  changed: 0,
  failed: 0,
};

function readTls(certsDir: string) {
  return {
    key: readFileSync(keyPath(certsDir, 'server')),
    cert: readFileSync(certPath(certsDir, 'server')),
    ca: readFileSync(certPath(certsDir, 'ca')),
  };
}

/** The numbers a caller sets; 0 would mean "no limit" to Node for the timeouts. */
const serverLimits = z
  .object({
    port: wholeNumber(0, 65_535).optional(),
    bodyLimit: wholeNumber(256, 64 * 1024 * 1024).optional(),
    requestTimeoutMs: wholeNumber(100, MAX_TIMER_MS).optional(),
    handshakeTimeoutMs: wholeNumber(100, MAX_TIMER_MS).optional(),
    reconcileIntervalMs: wholeNumber(0, MAX_TIMER_MS).optional(),
    maxExecOutputBytes: wholeNumber(1, 256 * 1024 * 1024).optional(),
  })
  .loose();

function statusOf(error: FastifyError | Error): number {
  const status = (error as FastifyError).statusCode;
  if (status && status >= 400 && status < 500) return status;
  if ((error as FastifyError).validation) return 400;
  if (error instanceof RefusedError) return 409;
  if (error instanceof OutputLimitError) return 413;
  if (error instanceof ClusterError) return 503; // etcd, or another node, or the agent busy: try again
  if (error instanceof ConfigError) return /^no (tenant|pool|instance) /.test(error.message) ? 404 : 400;
  return 500;
}

/**
 * Starts the fleet agent: HTTPS with mutual TLS (clients need a certificate from the agent's CA),
 * the API of AGENT_OPS, its OpenAPI document at /openapi.json, and a periodic reconcile from the
 * desired-state file. Certificate files replaced on disk (`certs rotate`) are picked up for new
 * connections without a restart.
 */
export async function startAgent(options: AgentServerOptions): Promise<AgentServer> {
  parseInput(serverLimits, options, 'agent');
  const log = options.log ?? (() => {});
  const tls = readTls(options.certsDir);
  const fleet = new Fleet({
    dir: options.fleetDir,
    log,
    ...(options.builder ? { builder: options.builder } : {}),
  });
  for (const repair of await fleet.repair())
    log(`repaired ${repair.path}: ${repair.from} -> ${repair.to}: ${repair.reason}`);
  const requestTimeout = options.requestTimeoutMs ?? 30_000;
  const app: FastifyInstance = Fastify({
    https: {
      ...tls,
      requestCert: true,
      // Checked below instead, where the reason can be logged: Node's own check drops the
      // connection without saying why (expired, another CA).
      rejectUnauthorized: false,
      handshakeTimeout: options.handshakeTimeoutMs ?? 10_000,
      minVersion: 'TLSv1.2',
      // Node checks requestTimeout (and headersTimeout, 60 s by default) only every
      // connectionsCheckingInterval (30 s by default): a slow body was cut at 60 to 90 s, not 30.
      headersTimeout: requestTimeout,
      requestTimeout,
      connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(requestTimeout / 10))),
    },
    bodyLimit: options.bodyLimit ?? 64 * 1024,
    requestTimeout,
    connectionTimeout: 0,
    keepAliveTimeout: 5_000,
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  });
  // JSON.parse keeps a "__proto__" key as a plain own property (it sets no prototype), so the
  // strict schemas name it as an unknown key; fastify's parser called that body "not valid JSON".
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    if (body === '') return done(null, undefined);
    try {
      done(null, JSON.parse(body as string));
    } catch (error) {
      done(
        Object.assign(new ConfigError(`body: not valid JSON: ${(error as Error).message}`), {
          statusCode: 400,
        }),
      );
    }
  });
  const loadDocument = async () => {
    if (options.desiredFile) return { doc: loadDesired(options.desiredFile), source: options.desiredFile };
    if (options.desiredSource) return options.desiredSource();
    throw new ConfigError(
      'the agent was started without a desired-state file (--desired) or a cluster (--etcd)',
    );
  };
  let chain: Promise<unknown> = Promise.resolve();
  let closing = false;
  const exclusive: Exclusive = <T>(work: () => Promise<T>, waitMs?: number): Promise<T> => {
    let late = false;
    let timer: NodeJS.Timeout | undefined;
    const run = () => {
      clearTimeout(timer);
      if (late) return Promise.resolve(undefined as T); // its caller was told already
      return work();
    };
    const next = chain.then(run, run);
    chain = next.catch(() => undefined);
    if (waitMs === undefined) return next;
    return new Promise<T>((resolve, reject) => {
      timer = setTimeout(() => {
        late = true;
        reject(
          new ClusterError(`the agent was busy (a reconcile or a move) for ${waitMs / 1000} s: try again`),
        );
      }, waitMs);
      next.then(resolve, reject);
    });
  };
  const reconcileNow = (request: { prune?: boolean; dryRun?: boolean } = {}) => {
    const run = async () => {
      const desired = await loadDocument();
      if (!desired)
        return {
          ...NOTHING_TO_RECONCILE,
          dryRun: Boolean(request.dryRun),
          document: 'none yet',
          at: new Date().toISOString(),
        };
      const report = await fleet.reconcile(desired.doc, {
        ...request,
        ...(desired.prune ? { prune: true } : {}),
        onAction: (a) => log(`reconcile: ${a.phase}: ${a.action} ${a.target}`),
      });
      return { ...report, document: desired.source, at: new Date().toISOString() };
    };
    return exclusive(run);
  };
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const statusCode = statusOf(error);
    if (statusCode >= 500) log(`${request.method} ${request.url}: ${error.stack ?? error.message}`);
    const message = error.validation
      ? `${error.validationContext ?? 'request'}: ${error.message}`
      : error.message;
    return reply.status(statusCode).send({ error: message.split('\n')[0], statusCode });
  });
  app.setNotFoundHandler((request, reply) =>
    reply
      .status(404)
      .send({ error: `no operation ${request.method} ${request.url} (see /openapi.json)`, statusCode: 404 }),
  );
  app.addHook('onResponse', async (request, reply) => {
    const peer = (request.raw.socket as TLSSocket).getPeerCertificate?.()?.subject?.CN ?? '?';
    log(
      `${peer}: ${request.method} ${request.url} -> ${reply.statusCode} (${Math.round(reply.elapsedTime)} ms)`,
    );
  });
  app.get('/openapi.json', async () => openApiDocument('0.1.0'));
  registerRoutes(app, {
    fleet,
    reconcile: reconcileNow,
    maxExecOutputBytes: options.maxExecOutputBytes ?? 8 * 1024 * 1024,
  });
  options.routes?.(app, fleet, exclusive);
  const tlsServer = app.server as unknown as HttpsServer;
  tlsServer.prependListener('secureConnection', (socket: TLSSocket) => {
    if (socket.authorized) return;
    const presented = Object.keys(socket.getPeerCertificate() ?? {}).length > 0;
    const reason = presented ? String(socket.authorizationError) : 'no client certificate';
    log(`TLS client ${socket.remoteAddress ?? '?'} refused: ${reason}`);
    socket.destroy();
  });
  // Upgraded connections (tunnels) are no longer requests: the server's close would wait for them.
  const upgraded = new Set<Duplex>();
  if (options.upgrade) {
    const upgrade = options.upgrade;
    tlsServer.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      // A tunnel that comes back (its peer reopens it a second after it closed) while the server
      // closes: refused, else the close would wait for it for ever.
      if (closing) return socket.destroy();
      upgraded.add(socket);
      socket.once('close', () => upgraded.delete(socket));
      upgrade(request, socket, head);
    });
  }
  app.addHook('onRequest', async (request, reply) => {
    if (!(request.raw.socket as TLSSocket).authorized)
      return reply.status(403).send({ error: 'client certificate refused', statusCode: 403 });
    const readOnly = request.method === 'GET' || request.method === 'HEAD' ? undefined : options.readOnly?.();
    if (readOnly) return reply.status(503).send({ error: readOnly, statusCode: 503 });
  });
  tlsServer.on('tlsClientError', (error, socket) =>
    log(
      `TLS client ${socket.remoteAddress ?? '?'} refused: ${error.message.split('\n')[0]?.replace(/^[0-9A-F]+:error:[0-9A-F]+:/, '')}`,
    ),
  );

  let loaded = tls;
  const sameFiles = (a: typeof tls, b: typeof tls) =>
    a.key.equals(b.key) && a.cert.equals(b.cert) && a.ca.equals(b.ca);
  const reloadCertificates = () => {
    try {
      const next = readTls(options.certsDir);
      // A rotation writes several files: an event for one of them may come before the server's
      // pair changed. Nothing changed is nothing reloaded (and not said to be).
      if (sameFiles(next, loaded)) return;
      createSecureContext(next); // throws while a rotation is half done (key and cert mismatched)
      tlsServer.setSecureContext({ ...next });
      loaded = next;
      log(`certificates reloaded from ${options.certsDir}`);
    } catch (error) {
      log(`certificates not reloaded yet: ${(error as Error).message}`);
    }
  };
  let debounce: NodeJS.Timeout | undefined;
  const watcher: FSWatcher = watch(options.certsDir, () => {
    clearTimeout(debounce);
    debounce = setTimeout(reloadCertificates, 200);
  });

  await app.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 7443 });
  const port = (app.server.address() as AddressInfo).port;
  const host = options.host ?? '127.0.0.1';
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  log(`listening on ${url}`);

  const interval = options.reconcileIntervalMs ?? 0;
  let timer: NodeJS.Timeout | undefined;
  if ((options.desiredFile || options.desiredSource) && interval > 0) {
    const tick = () => {
      if (options.readOnly?.()) {
        timer = setTimeout(tick, interval);
        return;
      }
      reconcileNow()
        .then((report) => log(`periodic reconcile: ${report.changed} change(s), ${report.failed} failure(s)`))
        .catch((error: Error) => log(`periodic reconcile failed: ${error.message}`))
        .finally(() => {
          if (!closing) timer = setTimeout(tick, interval);
        });
    };
    timer = setTimeout(tick, 0);
  }

  return {
    url,
    port,
    fleet,
    reconcileNow,
    exclusive,
    reloadCertificates,
    async close() {
      if (closing) return;
      closing = true;
      clearTimeout(timer);
      clearTimeout(debounce);
      watcher.close();
      for (const socket of upgraded) socket.destroy();
      await app.close();
      await chain;
      await fleet.close();
      log('stopped');
    },
  };
}

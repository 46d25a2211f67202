import { readFileSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { ConfigError, VmkitError } from '../../errors.js';
import { parseAddress } from '../state/ids.js';
import { AGENT_OPS, type AgentOp, type AgentRequest, type AgentResponse } from './api.js';

export interface ConnectAgentOptions {
  /** The agent's address, e.g. https://127.0.0.1:7443. */
  url: string;
  /** The agent's CA certificate, client certificate and client key: PEM text, or a file path. */
  ca: string | Buffer;
  cert: string | Buffer;
  key: string | Buffer;
  /** How long one call may take (default 120 s; exec and reconcile can be slow). */
  timeoutMs?: number;
}

/** A request the agent answered with an error status; `statusCode` 409 is a refusal (a quota, a state). */
export class AgentCallError extends VmkitError {
  constructor(
    readonly op: string,
    readonly statusCode: number,
    message: string,
  ) {
    super(`agent ${op}: ${statusCode}: ${message}`);
  }
}

/** The agent could not be reached, or the connection broke before it answered. */
export class AgentConnectionError extends VmkitError {
  override name = 'AgentConnectionError';
}

const pem = (value: string | Buffer, what: string) => {
  if (typeof value !== 'string' || value.includes('-----BEGIN')) return value;
  try {
    return readFileSync(value);
  } catch (error) {
    throw new ConfigError(`agent ${what} ${value}: cannot read it: ${(error as Error).message}`);
  }
};

type Call<O extends AgentOp> = Partial<AgentRequest<O>>;

/** A typed client of one fleet agent over mutual TLS, keeping its connections alive between calls. */
export class AgentClient {
  private readonly agent: Agent;
  private readonly base: URL;
  private readonly timeoutMs: number;

  constructor(options: ConnectAgentOptions) {
    if (!URL.canParse(options.url))
      throw new ConfigError(`agent url ${JSON.stringify(options.url)}: not a URL`);
    this.base = new URL(options.url);
    if (this.base.protocol !== 'https:') throw new ConfigError(`agent url ${options.url}: must be https://`);
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.agent = new Agent({
      keepAlive: true,
      ca: pem(options.ca, 'CA certificate'),
      cert: pem(options.cert, 'client certificate'),
      key: pem(options.key, 'client key'),
      // SNI carries names only; for an address the certificate's IP entries are checked.
      servername: isIP(this.base.hostname.replace(/^\[|\]$/g, '')) ? '' : this.base.hostname,
    });
  }

  /** Calls one operation; the reply is checked against the operation's response schema. */
  async call<O extends AgentOp>(op: O, request: Call<O> = {}): Promise<AgentResponse<O>> {
    const spec = AGENT_OPS[op];
    const params = (request.params ?? {}) as Record<string, string>;
    let path: string = spec.url.replace(/:(\w+)/g, (_m, name: string) =>
      encodeURIComponent(params[name] ?? ''),
    );
    const query = Object.entries((request.query ?? {}) as Record<string, unknown>).filter(
      ([, v]) => v !== undefined,
    );
    if (query.length > 0)
      path += `?${new URLSearchParams(query.map(([k, v]): [string, string] => [k, String(v)]))}`;
    const body = spec.method === 'POST' ? JSON.stringify(request.body ?? {}) : undefined;
    const { status, json } = await this.send(spec.method, path, body, op);
    if (status !== 200) {
      const message = (json as { error?: string } | undefined)?.error ?? JSON.stringify(json);
      throw new AgentCallError(op, status, message);
    }
    const checked = spec.response.safeParse(json);
    if (!checked.success) {
      throw new AgentCallError(
        op,
        status,
        `reply does not match the API's schema: ${checked.error.issues[0]?.message}`,
      );
    }
    return checked.data as AgentResponse<O>;
  }

  /** The agent's OpenAPI document. */
  async openApi(): Promise<Record<string, unknown>> {
    return (await this.send('GET', '/openapi.json', undefined, 'openapi')).json as Record<string, unknown>;
  }

  reconcile(options: { prune?: boolean; dryRun?: boolean } = {}) {
    return this.call('reconcile', { body: options });
  }
  nodeInfo() {
    return this.call('nodeInfo');
  }
  nodeStats() {
    return this.call('nodeStats');
  }
  tenants() {
    return this.call('tenants');
  }
  instances(filter: { tenant?: string; pool?: string } = {}) {
    return this.call('instances', { query: filter });
  }
  wake(address: string) {
    return this.call('wake', { params: parseAddress(address, 3) });
  }
  sleep(address: string) {
    return this.call('sleep', { params: parseAddress(address, 3) });
  }
  exec(address: string, command: string[], options: { timeoutMs?: number } = {}) {
    return this.call('exec', { params: parseAddress(address, 3), body: { command, ...options } });
  }
  audit(tenant: string, options: { tail?: number } = {}) {
    return this.call('audit', { params: { tenant }, query: options });
  }

  /** Closes the kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private send(
    method: string,
    path: string,
    body: string | undefined,
    op: string,
  ): Promise<{ status: number; json: unknown }> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        new URL(path, this.base),
        {
          method,
          agent: this.agent,
          headers:
            body === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', (error) =>
            reject(new AgentConnectionError(`agent ${op} at ${this.base.origin}: ${error.message}`)),
          );
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            try {
              resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : undefined });
            } catch {
              reject(new AgentCallError(op, res.statusCode ?? 0, `not JSON: ${text.slice(0, 200)}`));
            }
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no reply within ${this.timeoutMs} ms`)));
      req.on('error', (error) =>
        reject(new AgentConnectionError(`agent ${op} at ${this.base.origin}: ${error.message}`)),
      );
      req.end(body);
    });
  }
}

/**
 * Connects to a fleet agent with a client certificate and checks the connection once (the TLS
 * handshake both ways, then the OpenAPI document), so a wrong certificate fails here, by name.
 */
export async function connectAgent(options: ConnectAgentOptions): Promise<AgentClient> {
  const client = new AgentClient(options);
  try {
    await client.openApi();
  } catch (error) {
    client.close();
    throw error;
  }
  return client;
}

import type { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchemaCompiler } from 'fastify';
import type { z } from 'zod';
import { ConfigError } from '../../errors.js';
import { parseInput } from '../../util/validate.js';
import type { ReconcileReport } from '../desired/reconcile.js';
import type { Fleet } from '../fleet.js';
import { audit } from '../state/audit.js';
import { tenantAudit } from '../vmm/metadata-reads.js';
import { AGENT_OPS, type AgentOp, type AgentRequest, type AgentResponse, jsonSchema } from './api.js';

export interface RouteContext {
  fleet: Fleet;
  /** Reconciles towards the agent's desired-state file (one at a time). */
  reconcile: (options: {
    prune?: boolean;
    dryRun?: boolean;
  }) => Promise<ReconcileReport & { document: string; at: string }>;
  /** stdout and stderr of one exec together; past it the command is killed and the reply is 413. */
  maxExecOutputBytes: number;
}

type Handler<O extends AgentOp> = (
  request: AgentRequest<O>,
  actor: string,
) => Promise<AgentResponse<O>> | AgentResponse<O>;

type InstanceParams = { tenant: string; pool: string; instance: string };
const address = (p: InstanceParams) => `${p.tenant}/${p.pool}/${p.instance}`;

/**
 * Records who asked, by the name in their client certificate, before the fleet carries the
 * operation out (the fleet's own events name the agent's process as the actor).
 */
function auditCall(fleet: Fleet, actor: string, op: AgentOp, params: InstanceParams, detail?: string): void {
  fleet.store.tenant(params.tenant);
  audit(fleet.dir, {
    tenant: params.tenant,
    actor,
    action: `api.${op}`,
    target: address(params),
    outcome: 'ok',
    detail,
  });
}

function handlers(ctx: RouteContext): { [O in AgentOp]: Handler<O> } {
  const { fleet } = ctx;
  return {
    reconcile: ({ body }) => ctx.reconcile(body ?? {}),
    nodeInfo: () => fleet.nodeInfo(),
    nodeStats: () => fleet.nodeStats(),
    tenants: () =>
      fleet.store.listTenants().map((t) => ({
        id: t.id,
        subnet: t.subnet,
        gateway: t.gateway,
        quotas: t.quotas,
        secretNames: Object.keys(t.secrets),
        pools: fleet.store.listPools(t.id).map((p) => p.id),
        createdAt: t.createdAt,
      })),
    instances: ({ query }) => {
      if (query?.pool && !query.tenant) throw new ConfigError('instances: pool needs tenant');
      if (query?.tenant) fleet.store.tenant(query.tenant);
      if (query?.tenant && query.pool) fleet.store.pool(query.tenant, query.pool);
      return fleet.store.listInstances({ tenant: query?.tenant, pool: query?.pool });
    },
    wake: ({ params }, actor) => {
      auditCall(fleet, actor, 'wake', params);
      return fleet.wake(address(params));
    },
    sleep: ({ params }, actor) => {
      auditCall(fleet, actor, 'sleep', params);
      return fleet.sleep(address(params));
    },
    exec: async ({ params, body }, actor) => {
      auditCall(fleet, actor, 'exec', params, body.command.join(' '));
      const result = await fleet.exec(address(params), body.command, body.timeoutMs, {
        maxOutputBytes: ctx.maxExecOutputBytes,
      });
      return {
        status: result.status,
        timedOut: result.timedOut,
        stdout: result.stdout.toString('utf8'),
        stderr: result.stderr.toString('utf8'),
      };
    },
    audit: ({ params, query }) => {
      fleet.store.tenant(params.tenant);
      return tenantAudit(
        fleet.dir,
        fleet.store.listInstances({ tenant: params.tenant }),
        params.tenant,
        query?.tail,
      );
    },
  };
}

/** Query values arrive as text: whole numbers written in digits become numbers, nothing else. */
const queryNumbers = (query: unknown) =>
  query && typeof query === 'object'
    ? Object.fromEntries(
        Object.entries(query).map(([key, value]) => [
          key,
          typeof value === 'string' && /^\d{1,15}$/.test(value) ? Number(value) : value,
        ]),
      )
    : query;

/**
 * Validates each request part with the operation's zod schema itself: strict, no coercion (JSON
 * Schema through ajv turned [1, 2] into ["1", "2"] and "5" into 5, and lost the refinements:
 * ranges, no NUL bytes). The JSON Schemas stay on the route for the OpenAPI document.
 */
function zodValidator(spec: (typeof AGENT_OPS)[AgentOp]): FastifySchemaCompiler<unknown> {
  return ({ httpPart }) => {
    const part = httpPart === 'querystring' ? 'querystring' : httpPart;
    const schema = (spec as unknown as Record<string, z.ZodType | undefined>)[part ?? ''];
    return (data: unknown) => {
      if (!schema) return { value: data };
      try {
        return {
          value: parseInput(schema, part === 'querystring' ? queryNumbers(data) : data, part ?? 'request'),
        };
      } catch (error) {
        return { error: error as Error };
      }
    };
  };
}

/** Registers every operation of AGENT_OPS with its request and response schemas. */
export function registerRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const table = handlers(ctx);
  for (const [name, spec] of Object.entries(AGENT_OPS) as Array<[AgentOp, (typeof AGENT_OPS)[AgentOp]]>) {
    const schema: Record<string, unknown> = { response: { 200: jsonSchema(spec.response, 'output') } };
    if ('body' in spec) schema.body = jsonSchema(spec.body, 'input');
    if ('params' in spec) schema.params = jsonSchema(spec.params, 'input');
    if ('querystring' in spec) schema.querystring = jsonSchema(spec.querystring, 'input');
    const handler = table[name] as Handler<AgentOp>;
    app.route({
      method: spec.method,
      url: spec.url,
      schema,
      validatorCompiler: zodValidator(spec),
      handler: async (request: FastifyRequest, reply: FastifyReply) => {
        const peer = (request.raw.socket as TLSSocket).getPeerCertificate().subject?.CN ?? 'unknown';
        const result = await handler(
          { params: request.params, query: request.query, body: request.body } as AgentRequest<AgentOp>,
          `${peer} (client certificate, via the agent)`,
        );
        return reply.send(result);
      },
    });
  }
}

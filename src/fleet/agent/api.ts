import { z } from 'zod';
import { timeoutMs } from '../../util/validate.js';
import { fleetId } from '../state/ids.js';
import { STATES } from '../state/lifecycle.js';

/**
 * The agent's API, one entry per operation: method, URL, request and response schemas. The server
 * validates requests and shapes responses from it, the client types its calls and checks the
 * replies with it, and the OpenAPI document is generated from it.
 */

const instance = z.object({
  seq: z.number(),
  tenant: z.string(),
  pool: z.string(),
  id: z.string(),
  path: z.string(),
  state: z.enum(STATES),
  address: z.string(),
  mac: z.string(),
  revision: z.string(),
  pinned: z.boolean(),
  critical: z.boolean(),
  pid: z.number().optional(),
  reason: z.string().optional(),
  warnings: z.array(z.string()),
  createdAt: z.string(),
  updatedAt: z.string(),
  startedAt: z.string().optional(),
  lastActiveAt: z.string().optional(),
  intent: z.object({ operation: z.string(), from: z.string(), pid: z.number(), at: z.string() }).optional(),
});

const tenant = z.object({
  id: z.string(),
  subnet: z.string(),
  gateway: z.string(),
  quotas: z.object({
    maxVcpus: z.number(),
    maxMemoryMiB: z.number(),
    maxRunning: z.number(),
    maxWarm: z.number(),
    maxInstances: z.number(),
    maxDiskMiB: z.number(),
  }),
  /** Only the names: secret values never leave the host through the API. */
  secretNames: z.array(z.string()),
  pools: z.array(z.string()),
  createdAt: z.string(),
});

const action = z.object({
  phase: z.string(),
  action: z.string(),
  target: z.string(),
  detail: z.string().optional(),
  outcome: z.enum(['planned', 'done', 'failed']),
  error: z.string().optional(),
});

const reconcileReport = z.object({
  dryRun: z.boolean(),
  repairs: z.array(z.object({ path: z.string(), from: z.string(), to: z.string(), reason: z.string() })),
  phases: z.array(z.object({ phase: z.string(), actions: z.array(action), skipped: z.string().optional() })),
  changed: z.number(),
  failed: z.number(),
  /** Which document the agent reconciled towards, and when. */
  document: z.string(),
  at: z.string(),
});

const nodeInfo = z.object({
  host: z.string(),
  cpus: z.number(),
  memoryMiB: z.number(),
  freeMemoryMiB: z.number(),
  accelerator: z.string(),
  acceleratorReason: z.string(),
  cgroups: z.object({
    version: z.string(),
    controllers: z.array(z.string()),
    /** Where each VMM's groups go, and why there. */
    vmmGroups: z.string(),
    /** What would not be applied to a VMM started now. */
    warnings: z.array(z.string()),
  }),
  limits: z.string(),
  sandbox: z.string(),
  jail: z.string(),
  fleetDir: z.string(),
  vmkitVersion: z.string(),
});

const nodeStats = z.object({
  instances: z.record(z.string(), z.number()),
  tenants: z.record(z.string(), z.record(z.string(), z.record(z.string(), z.number()))),
  hostMemoryMiB: z.number(),
});

const auditEvent = z.object({
  time: z.string(),
  tenant: z.string(),
  actor: z.string(),
  action: z.string(),
  target: z.string(),
  outcome: z.string(),
  detail: z.string().optional(),
});

const instanceParams = z.object({ tenant: fleetId, pool: fleetId, instance: fleetId }).strict();
// Query values arrive as text; the server turns digits into numbers before this checks them.
const whole = z.number({ error: 'must be a whole number from 0 to 100000' }).int().min(0).max(100_000);
/** One argument of a command: any text but a NUL byte, which no argv can carry. */
const argument = z
  .string({ error: 'must be a string' })
  .refine((text) => !text.includes('\0'), { error: 'must not contain a NUL byte' });

export const AGENT_OPS = {
  reconcile: {
    method: 'POST',
    url: '/v1/reconcile',
    summary: "Reconcile the fleet towards the agent's desired-state file now",
    body: z.object({ prune: z.boolean().optional(), dryRun: z.boolean().optional() }).strict(),
    response: reconcileReport,
  },
  nodeInfo: {
    method: 'GET',
    url: '/v1/node/info',
    summary: 'This host as the fleet sees it',
    response: nodeInfo,
  },
  nodeStats: {
    method: 'GET',
    url: '/v1/node/stats',
    summary: 'Instances by state, tenant and pool; VMM memory',
    response: nodeStats,
  },
  tenants: {
    method: 'GET',
    url: '/v1/tenants',
    summary: 'Tenants and their pools',
    response: z.array(tenant),
  },
  instances: {
    method: 'GET',
    url: '/v1/instances',
    summary: 'Instances, optionally of one tenant or pool',
    querystring: z.object({ tenant: fleetId.optional(), pool: fleetId.optional() }).strict(),
    response: z.array(instance),
  },
  wake: {
    method: 'POST',
    url: '/v1/instances/:tenant/:pool/:instance/wake',
    summary: 'Wake a Sleeping instance',
    params: instanceParams,
    response: instance,
  },
  sleep: {
    method: 'POST',
    url: '/v1/instances/:tenant/:pool/:instance/sleep',
    summary: 'Put a Running or Warm instance to sleep',
    params: instanceParams,
    response: instance,
  },
  exec: {
    method: 'POST',
    url: '/v1/instances/:tenant/:pool/:instance/exec',
    summary: 'Run a command in a Running instance',
    params: instanceParams,
    body: z
      .object({
        command: z
          .array(argument, { error: 'must be an array of strings' })
          .min(1, { error: 'must name a program' })
          .max(256, { error: 'at most 256 arguments' }),
        timeoutMs: timeoutMs.optional(),
      })
      .strict(),
    response: z.object({ status: z.number(), timedOut: z.boolean(), stdout: z.string(), stderr: z.string() }),
  },
  audit: {
    method: 'GET',
    url: '/v1/audit/:tenant',
    summary: "A tenant's audit log, newest last",
    params: z.object({ tenant: fleetId }).strict(),
    querystring: z.object({ tail: whole.optional() }).strict(),
    response: z.array(auditEvent),
  },
} as const;

export type AgentOp = keyof typeof AGENT_OPS;
type Spec<O extends AgentOp> = (typeof AGENT_OPS)[O];
type Part<O extends AgentOp, K extends string> =
  Spec<O> extends { [key in K]: z.ZodType } ? z.input<Spec<O>[K]> : undefined;

/** What a call of `op` sends. */
export interface AgentRequest<O extends AgentOp> {
  params: Part<O, 'params'>;
  query: Part<O, 'querystring'>;
  body: Part<O, 'body'>;
}
/** What a call of `op` returns. */
export type AgentResponse<O extends AgentOp> = z.output<Spec<O>['response']>;

/** A zod schema as the JSON Schema (draft 7) fastify's validator and the OpenAPI document take. */
export function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, {
    target: 'draft-7',
    io,
    unrepresentable: 'any',
  });
  return rest;
}

/** The error body every failed request gets. */
export const agentError = z.object({ error: z.string(), statusCode: z.number() });

/** The OpenAPI 3 document of the API, as `GET /openapi.json` serves it. */
export function openApiDocument(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [name, spec] of Object.entries(AGENT_OPS)) {
    const url = spec.url.replace(/:(\w+)/g, '{$1}');
    const parameters: unknown[] = [];
    for (const [where, key] of [
      ['path', 'params'],
      ['query', 'querystring'],
    ] as const) {
      const shape = key in spec ? (spec as unknown as Record<string, z.ZodObject>)[key]?.shape : undefined;
      for (const [param, schema] of Object.entries(shape ?? {})) {
        parameters.push({
          name: param,
          in: where,
          required: where === 'path',
          schema: jsonSchema(schema as z.ZodType, 'input'),
        });
      }
    }
    paths[url] = {
      ...paths[url],
      [spec.method.toLowerCase()]: {
        operationId: name,
        summary: spec.summary,
        ...(parameters.length > 0 ? { parameters } : {}),
        ...('body' in spec
          ? {
              requestBody: {
                required: true,
                content: { 'application/json': { schema: jsonSchema(spec.body, 'input') } },
              },
            }
          : {}),
        responses: {
          200: {
            description: 'OK',
            content: { 'application/json': { schema: jsonSchema(spec.response, 'output') } },
          },
          default: {
            description: 'An error',
            content: { 'application/json': { schema: jsonSchema(agentError, 'output') } },
          },
        },
      },
    };
  }
  return {
    openapi: '3.0.3',
    info: { title: 'vmkit fleet agent', version },
    components: {
      securitySchemes: {
        mutualTLS: { type: 'mutualTLS', description: "a client certificate from the agent's CA" },
      },
    },
    paths,
  };
}

import {
  errorCodes,
  eventTypes,
  itemStatuses,
  jobStatuses,
  protocolVersion,
  type ApiKey,
  type ApiKeyList,
  type ApiKeyRole,
  type AppendResponse,
  type BulkWriteResponse,
  type Claim,
  type ClaimList,
  type CreateApiKeyRequest,
  type CreatedApiKey,
  type ErrorBody,
  type ErrorCode,
  type ErrorResponse,
  type EventType,
  type Health,
  type HeartbeatResponse,
  type ItemStatus,
  type JobCheckpoint,
  type JobEvent,
  type JobPage,
  type JobResult,
  type JobState,
  type JobSummary,
  type Metadata,
  type MintTokenRequest,
  type Owner,
  type PollResponse,
  type Readiness,
  type RevokedApiKey,
  type SignalsResponse,
  type SubscriptionToken,
  type ValueRef,
} from '@jobwire/protocol'
import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { roles } from '../core/scopes.js'
import { keyBody, tokenBody } from './routes/access.js'
import { bulkBodyDoc, cancelBody, claimBody, createJobBody, heartbeatBody, listQuery, producerEventsBodyDoc, releaseBody, signalsBody } from './schemas.js'
import { wire, type Checked } from './wire-check.js'

/*
 * The HTTP API as an OpenAPI 3.1 document, built from the zod schemas the routes parse requests
 * with and the response schemas below. It is served at GET /v1/openapi.json, and the server's
 * tests validate every response they get against it, so it cannot drift from what the server does.
 * Every component is checked at compile time to describe exactly its wire type of @jobwire/protocol
 * (`wire<T>()`, wire-check.ts), so it cannot drift from what the SDKs expect either.
 */

const timestamp = z.string().meta({ description: 'ISO 8601 time, UTC' })
const owner = wire<Owner>()(z.object({ tenant: z.string(), user: z.string() }).strict().meta({ id: 'Owner' }))
const jobStatus = z.enum(jobStatuses)
// Typed as the protocol's Metadata (JSON values), which a record of unknown stands for in the document.
const metadata = z.record(z.string(), z.unknown()).meta({ description: 'app data, merged latest-wins per key (docs/app-features.md)' }) as unknown as z.ZodType<Metadata, Metadata>
const valueRef = wire<ValueRef>()(
  z
    .object({ ref: z.string(), size: z.number().int() })
    .strict()
    .meta({ id: 'ValueRef', description: 'A result or checkpoint stored apart (too large for an event): fetch it from /result or /checkpoint' }),
)
const plannedStage = { name: z.string(), from: z.number(), to: z.number() }

const jobFields = {
  id: z.string().meta({ description: '`job_` + 22 URL-safe characters (128 random bits)' }),
  type: z.string(),
  owner: owner.nullable(),
  input: z.unknown(),
  status: jobStatus,
  progress: z.object({ stage: z.string().nullable(), percent: z.number().nullable(), message: z.string().nullable(), metadata: metadata.optional() }).strict(),
  stages: z.array(z.object({ stage: z.string(), at: timestamp }).strict()),
  plan: z
    .array(z.object({ ...plannedStage, status: z.enum(['pending', 'running', 'done', 'skipped', 'failed', 'cancelled']), fraction: z.number().nullable() }).strict())
    .optional()
    .meta({ description: "the job's stage plan with each stage's status (docs/app-features.md)" }),
  items: z.array(
    z
      .object({
        id: z.string(),
        label: z.string().nullable(),
        status: z.enum(itemStatuses as [ItemStatus, ...ItemStatus[]]),
        percent: z.number().nullable(),
        message: z.string().nullable(),
        metadata: metadata.optional(),
        updatedAt: timestamp,
      })
      .strict(),
  ),
  text: z.string(),
  checkpoint: z.unknown(),
  checkpointTextLength: z.number().int().optional(),
  checkpointRef: valueRef.optional(),
  result: z.unknown(),
  resultRef: valueRef.optional(),
  error: z.object({ code: z.string(), message: z.string(), retryable: z.boolean() }).strict().nullable(),
  attempt: z.number().int(),
  maxAttempts: z.number().int(),
  dispatch: z.boolean(),
  worker: z.string().nullable(),
  queuePosition: z.number().int().nullable(),
  createdAt: timestamp,
  startedAt: timestamp.nullable(),
  finishedAt: timestamp.nullable(),
  updatedAt: timestamp,
  seq: z.number().int(),
}

const jobState = wire<JobState>()(
  z.object(jobFields).strict().meta({ id: 'JobState', description: "A job's state at its `seq`: the reduction of its events." }),
)

const { text: _text, input: _input, result: _result, checkpoint: _checkpoint, ...summaryFields } = jobFields
const jobSummary = wire<JobSummary>()(
  z
    .object({ ...summaryFields, textLength: z.number().int(), finished: z.boolean() })
    .strict()
    .meta({ id: 'JobSummary', description: 'A job as listed: without `text`, `input`, `result` and `checkpoint`.' }),
)

const eventData = {
  created: z
    .object({ type: z.string(), input: z.unknown(), owner: owner.nullable(), dispatch: z.boolean(), maxAttempts: z.number().int(), plan: z.array(z.object(plannedStage).strict()).optional() })
    .strict(),
  started: z.object({ attempt: z.number().int(), worker: z.string().nullable() }).strict(),
  progress: z
    .object({ stage: z.string().optional(), percent: z.number().optional(), message: z.string().optional(), fraction: z.number().optional(), metadata: metadata.optional() })
    .strict(),
  item: z
    .object({
      id: z.string(),
      label: z.string().optional(),
      status: z.enum(itemStatuses as [ItemStatus, ...ItemStatus[]]).optional(),
      percent: z.number().optional(),
      message: z.string().optional(),
      metadata: metadata.optional(),
    })
    .strict(),
  chunk: z.object({ text: z.string() }).strict(),
  checkpoint: z.object({ data: z.unknown(), textLength: z.number().int().optional(), ref: valueRef.optional() }).strict(),
  completed: z.object({ result: z.unknown(), resultRef: valueRef.optional() }).strict(),
  failed: z.object({ code: z.string(), message: z.string(), retryable: z.boolean() }).strict(),
  cancelled: z.object({ reason: z.string().nullable() }).strict(),
  requeued: z
    .object({
      reason: z.string(),
      attempt: z.number().int(),
      retryAt: timestamp.nullable(),
      maxAttempts: z.number().int().optional(),
      error: z.object({ code: z.string(), message: z.string() }).strict().optional(),
      textLength: z.number().int().optional().meta({ description: 'the text is rolled back to this many characters (what the checkpoint held)' }),
      counted: z.literal(false).optional().meta({ description: 'the attempt does not count: no handler ran it; the job is back at attempt - 1' }),
    })
    .strict(),
} satisfies Record<JobEvent['type'], z.ZodType>

const eventOf = <K extends EventType>(type: K) =>
  z.object({ jobId: z.string(), seq: z.number().int(), type: z.literal(type), at: timestamp, data: eventData[type] }).strict()
/** The schema of each event type's event; their union is the JobEvent schema's type. */
type EventSchema = { [K in EventType]: ReturnType<typeof eventOf<K>> }[EventType]
const jobEvent = wire<JobEvent>()(
  z
    .discriminatedUnion('type', eventTypes.map((type) => eventOf(type)) as unknown as [EventSchema, ...EventSchema[]])
    .meta({ id: 'JobEvent', description: 'An event as stored and delivered; `seq` is contiguous per job from 1.' }),
)

const errorBody = wire<ErrorBody>()(
  z
    .object({
      code: z.enum(errorCodes as [ErrorCode, ...ErrorCode[]]),
      message: z.string(),
      details: z.record(z.string(), z.unknown()).optional(),
    })
    .strict()
    .meta({ id: 'ErrorBody', description: 'A registry error: see docs/errors.md.' }),
)
const errorResponse = wire<ErrorResponse>()(z.object({ error: errorBody }).strict().meta({ id: 'ErrorResponse' }))

const snapshot = z.object({ job: jobState, reset: z.boolean(), reason: z.enum(['initial', 'trimmed']) }).strict()
const pollResponse = wire<PollResponse>()(
  z
    .object({ snapshot: snapshot.optional(), events: z.array(jobEvent), next: z.number().int(), done: z.boolean(), more: z.boolean() })
    .strict()
    .meta({ id: 'PollResponse' }),
)

const appended = {
  events: z.array(z.object({ seq: z.number().int(), type: z.enum(eventTypes) }).strict()),
  seq: z.number().int(),
  status: jobStatus,
  duplicate: z.literal(true).optional().meta({ description: 'a worker batch number seen before: nothing was appended' }),
}
const appendResponse = wire<AppendResponse>()(z.object(appended).strict().meta({ id: 'AppendResponse' }))
const bulkResult = z.union([z.object({ jobId: z.string(), ...appended }).strict(), z.object({ jobId: z.string(), error: errorBody }).strict()])
const bulkResponse = wire<BulkWriteResponse>()(z.object({ results: z.array(bulkResult) }).strict().meta({ id: 'BulkWriteResponse' }))

const page = wire<JobPage>()(z.object({ jobs: z.array(jobSummary), nextCursor: z.string().nullable() }).strict().meta({ id: 'JobPage' }))
const claimed = wire<Claim>()(
  z
    .object({ job: jobState, lease: z.object({ token: z.string(), expiresAt: timestamp, leaseMs: z.number().int() }).strict() })
    .strict()
    .meta({ id: 'Claim' }),
)
const claimList = wire<ClaimList>()(
  z
    .object({
      claims: z.array(claimed).meta({ description: 'oldest first, at most `max`; empty when none came within `wait`' }),
      done: z.array(bulkResult).optional().meta({ description: "the answers to the request's `done` writes, in order: what each appended, or why it was refused" }),
    })
    .strict()
    .meta({ id: 'ClaimList' }),
)
const heartbeat = wire<HeartbeatResponse>()(
  z
    .object({
      status: jobStatus,
      cancelled: z.boolean(),
      expiresAt: timestamp.nullable().meta({ description: "when the lease lapses; for a self-run job's runner heartbeat (no `lease` sent), when its `heartbeatTimeout` falls" }),
      timedOut: z.boolean().meta({ description: "the job's timeout ended it" }),
    })
    .strict()
    .meta({ id: 'Heartbeat' }),
)
const signals = wire<SignalsResponse>()(
  z
    .object({ signals: z.array(z.object({ jobId: z.string(), reason: z.enum(['cancelled', 'finished', 'lease_lost', 'timed_out']) }).strict()) })
    .strict()
    .meta({ id: 'Signals' }),
)
const token = wire<SubscriptionToken>()(z.object({ token: z.string(), expiresAt: timestamp }).strict().meta({ id: 'SubscriptionToken' }))
const keyFields = {
  id: z.string(),
  name: z.string(),
  role: z.enum(roles as [ApiKeyRole, ...ApiKeyRole[]]),
  tenant: z.string().nullable(),
  types: z.array(z.string()).nullable(),
  createdAt: timestamp,
  revokedAt: timestamp.nullable(),
}
const apiKey = wire<ApiKey>()(z.object(keyFields).strict().meta({ id: 'ApiKey', description: 'An API key as listed: never its secret.' }))
const createdKey = wire<CreatedApiKey>()(
  z
    .object({ ...keyFields, key: z.string().meta({ description: '`jwk_<id>.<secret>`, shown this once' }) })
    .strict()
    .meta({ id: 'CreatedApiKey' }),
)
const keyList = wire<ApiKeyList>()(z.object({ keys: z.array(apiKey) }).strict().meta({ id: 'ApiKeyList' }))
const revoked = wire<RevokedApiKey>()(z.object({ id: z.string(), revoked: z.literal(true) }).strict().meta({ id: 'RevokedApiKey' }))
const resultResponse = wire<JobResult>()(
  z.object({ result: z.unknown() }).strict().meta({ id: 'JobResult', description: "A job's result in full (null while it has none)" }),
)
const checkpointResponse = wire<JobCheckpoint>()(
  z.object({ checkpoint: z.unknown() }).strict().meta({ id: 'JobCheckpoint', description: "A job's checkpoint in full (null while it has none)" }),
)
const health = wire<Health>()(z.object({ ok: z.literal(true) }).strict().meta({ id: 'Health' }))
const readiness = wire<Readiness>()(z.object({ ok: z.boolean(), store: z.string(), reason: z.string().optional() }).strict().meta({ id: 'Readiness' }))

// Every component passed `wire<T>()`: the schema is exactly its protocol type (requests: schemas.ts, and the two below).
const components = {
  Owner: owner,
  JobState: jobState,
  JobSummary: jobSummary,
  JobEvent: jobEvent,
  ErrorBody: errorBody,
  ErrorResponse: errorResponse,
  PollResponse: pollResponse,
  AppendResponse: appendResponse,
  BulkWriteResponse: bulkResponse,
  JobPage: page,
  Claim: claimed,
  ClaimList: claimList,
  Heartbeat: heartbeat,
  Signals: signals,
  SubscriptionToken: token,
  ApiKey: apiKey,
  CreatedApiKey: createdKey,
  ApiKeyList: keyList,
  RevokedApiKey: revoked,
  Health: health,
  Readiness: readiness,
  JobResult: resultResponse,
  JobCheckpoint: checkpointResponse,
  ValueRef: valueRef,
  CreateJobRequest: createJobBody,
  ProducerEventsRequest: producerEventsBodyDoc,
  BulkWriteRequest: bulkBodyDoc,
  CancelRequest: cancelBody,
  ClaimRequest: claimBody,
  HeartbeatRequest: heartbeatBody,
  ReleaseRequest: releaseBody,
  SignalsRequest: signalsBody,
  TokenRequest: wire<MintTokenRequest>()(tokenBody),
  CreateApiKeyRequest: wire<CreateApiKeyRequest>()(keyBody),
} satisfies Record<string, Checked>
type ComponentName = keyof typeof components

const ref = (name: ComponentName) => ({ $ref: `#/components/schemas/${name}` })
const json = (name: ComponentName, description: string) => ({ description, content: { 'application/json': { schema: ref(name) } } })
const errors = { default: json('ErrorResponse', 'A registry error (docs/errors.md), with its HTTP status') }
const jsonBody = (name: ComponentName, required = true) => ({ required, content: { 'application/json': { schema: ref(name) } } })
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' }, description: 'the job id' }

interface Operation {
  summary: string
  description?: string
  operationId: string
  tags: string[]
  parameters?: unknown[]
  requestBody?: unknown
  responses: Record<string, unknown>
  security?: unknown[]
}

function queryParameters(schema: z.ZodObject): unknown[] {
  const jsonSchema = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input' }) as { properties: Record<string, unknown> }
  return Object.entries(jsonSchema.properties)
    .filter(([name]) => name !== 'access_token')
    .map(([name, property]) => ({ name, in: 'query', required: false, schema: property }))
}

const paths: Record<string, Record<string, Operation>> = {
  '/v1/jobs': {
    post: {
      summary: 'Create a job',
      operationId: 'createJob',
      tags: ['jobs'],
      requestBody: jsonBody('CreateJobRequest'),
      responses: { '201': json('JobState', 'The new job'), '200': json('JobState', 'The job created earlier with the same idempotencyKey'), ...errors },
    },
    get: {
      summary: 'List jobs the credential may see, newest first',
      operationId: 'listJobs',
      tags: ['jobs'],
      parameters: queryParameters(listQuery),
      responses: { '200': json('JobPage', 'One page'), ...errors },
    },
  },
  '/v1/jobs/{id}': {
    get: {
      summary: "A job's snapshot",
      operationId: 'getJob',
      tags: ['jobs'],
      parameters: [idParam],
      responses: { '200': json('JobState', "The job's state at its seq"), ...errors },
    },
  },
  '/v1/jobs/{id}/result': {
    get: {
      summary: "A job's result in full, also one stored apart as too large for an event (resultRef)",
      operationId: 'getResult',
      tags: ['jobs'],
      parameters: [idParam],
      responses: { '200': json('JobResult', 'The result'), ...errors },
    },
  },
  '/v1/jobs/{id}/checkpoint': {
    get: {
      summary: "A job's checkpoint in full, also one stored apart as too large for an event (checkpointRef)",
      operationId: 'getCheckpoint',
      tags: ['jobs'],
      parameters: [idParam],
      responses: { '200': json('JobCheckpoint', 'The checkpoint'), ...errors },
    },
  },
  '/v1/jobs/{id}/events': {
    post: {
      summary: 'Append one event or an atomic batch',
      operationId: 'appendEvents',
      tags: ['events'],
      parameters: [idParam],
      requestBody: jsonBody('ProducerEventsRequest'),
      responses: { '200': json('AppendResponse', 'The seqs given to the events'), ...errors },
    },
    get: {
      summary: 'Long-poll: the events after a position, or a snapshot (docs/protocol.md)',
      operationId: 'pollEvents',
      tags: ['streaming'],
      parameters: [
        idParam,
        { name: 'after', in: 'query', required: false, schema: { type: 'integer', minimum: 0 }, description: 'the last seq applied' },
        { name: 'wait', in: 'query', required: false, schema: { type: 'number', minimum: 0 }, description: 'seconds to wait for the first event (capped by --poll-max-wait)' },
      ],
      responses: { '200': json('PollResponse', 'Events, or a snapshot'), ...errors },
    },
  },
  '/v1/events': {
    post: {
      summary: 'Append events to many jobs in one request, each write atomic and answered on its own',
      operationId: 'appendBulk',
      tags: ['events'],
      requestBody: jsonBody('BulkWriteRequest'),
      responses: { '200': json('BulkWriteResponse', 'One result per write, in request order'), ...errors },
    },
  },
  '/v1/jobs/{id}/cancel': {
    post: {
      summary: 'Cancel a job',
      operationId: 'cancelJob',
      tags: ['jobs'],
      parameters: [idParam],
      requestBody: jsonBody('CancelRequest', false),
      responses: { '200': json('JobState', 'The job, cancelled (unchanged if it already was)'), ...errors },
    },
  },
  '/v1/jobs/{id}/resume': {
    post: {
      summary: 'Put a failed or cancelled job back in the queue from its checkpoint',
      operationId: 'resumeJob',
      tags: ['jobs'],
      parameters: [idParam],
      responses: { '200': json('JobState', 'The job, queued again'), ...errors },
    },
  },
  '/v1/jobs/{id}/stream': {
    get: {
      summary: 'Server-Sent Events: a snapshot or an exact replay, then live events (docs/protocol.md)',
      operationId: 'streamJob',
      tags: ['streaming'],
      parameters: [
        idParam,
        { name: 'after', in: 'query', required: false, schema: { type: 'integer', minimum: 0 }, description: 'the last seq applied (or the Last-Event-ID header)' },
        { name: 'Last-Event-ID', in: 'header', required: false, schema: { type: 'string' } },
      ],
      responses: {
        '200': { description: 'An event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
        '204': { description: 'The job finished and the position is its last seq: nothing more will come (EventSource stops reconnecting)' },
        ...errors,
      },
    },
  },
  '/v1/workers/claim': {
    post: {
      summary: 'Claim the oldest ready jobs of some types (long-poll)',
      description:
        'Without `max`: one job and its lease (`Claim`), or 204 when none came within `wait`. With `max`: up to `max` jobs, each under its own lease, committed together (`ClaimList`, empty when none came). With `done`: the last writes of jobs the worker finished (each ending with `completed` or `failed`, under its lease) are applied with the claim (one commit), each answered on its own in `done` like `POST /v1/events`; such a claim waits for no job.',
      operationId: 'claimJob',
      tags: ['workers'],
      requestBody: jsonBody('ClaimRequest'),
      responses: {
        '200': {
          description: 'The job and its lease; with `max`, the list of jobs claimed',
          content: { 'application/json': { schema: { oneOf: [ref('Claim'), ref('ClaimList')] } } },
        },
        '204': { description: 'Nothing came within wait (requests without `max` or `done`)' },
        ...errors,
      },
    },
  },
  '/v1/jobs/{id}/heartbeat': {
    post: {
      summary: "Extend a claimed job's lease",
      operationId: 'heartbeat',
      tags: ['workers'],
      parameters: [idParam],
      requestBody: jsonBody('HeartbeatRequest'),
      responses: { '200': json('Heartbeat', 'The lease, extended'), ...errors },
    },
  },
  '/v1/jobs/{id}/release': {
    post: {
      summary: 'Give a claimed job back to the queue',
      operationId: 'releaseJob',
      tags: ['workers'],
      parameters: [idParam],
      requestBody: jsonBody('ReleaseRequest'),
      responses: { '200': json('JobState', 'The job, queued again'), ...errors },
    },
  },
  '/v1/workers/signals': {
    post: {
      summary: 'Long-poll until one of the held jobs is cancelled, finished or taken away',
      operationId: 'workerSignals',
      tags: ['workers'],
      requestBody: jsonBody('SignalsRequest'),
      responses: { '200': json('Signals', 'What happened to which job'), ...errors },
    },
  },
  '/v1/tokens': {
    post: {
      summary: 'Mint a subscription token',
      operationId: 'mintToken',
      tags: ['access'],
      requestBody: jsonBody('TokenRequest'),
      responses: { '200': json('SubscriptionToken', 'The token'), ...errors },
    },
  },
  '/v1/keys': {
    post: {
      summary: 'Create an API key',
      operationId: 'createKey',
      tags: ['access'],
      requestBody: jsonBody('CreateApiKeyRequest'),
      responses: { '201': json('CreatedApiKey', 'The key record and the key, shown once'), ...errors },
    },
    get: {
      summary: 'List API keys (no secrets)',
      operationId: 'listKeys',
      tags: ['access'],
      responses: { '200': json('ApiKeyList', 'Every key'), ...errors },
    },
  },
  '/v1/keys/{id}': {
    delete: {
      summary: 'Revoke an API key at once',
      operationId: 'revokeKey',
      tags: ['access'],
      parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' }, description: 'the key id' }],
      responses: { '200': json('RevokedApiKey', 'Revoked'), ...errors },
    },
  },
  '/v1/openapi.json': {
    get: {
      summary: 'This document',
      operationId: 'openApi',
      tags: ['meta'],
      security: [],
      responses: { '200': { description: 'OpenAPI 3.1', content: { 'application/json': { schema: { type: 'object' } } } } },
    },
  },
  '/healthz': {
    get: { summary: 'Liveness', operationId: 'health', tags: ['meta'], security: [], responses: { '200': json('Health', 'The process runs') } },
  },
  '/readyz': {
    get: {
      summary: 'Readiness: the store answers and the sweeps keep running',
      operationId: 'readiness',
      tags: ['meta'],
      security: [],
      responses: { '200': json('Readiness', 'Ready'), '503': json('Readiness', 'Not ready, and why') },
    },
  },
  '/metrics': {
    get: {
      summary: 'Prometheus metrics (admin credential, header or cookie)',
      operationId: 'metrics',
      tags: ['meta'],
      responses: { '200': { description: 'Prometheus text', content: { 'text/plain': { schema: { type: 'string' } } } }, ...errors },
    },
  },
}

/** The server package's version (from src/http and dist/http alike). */
const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

let built: Record<string, unknown> | null = null

/** The OpenAPI 3.1 document of the HTTP API (built once per process). */
export function openApiDocument(): Record<string, unknown> {
  if (built !== null) return built
  const registry = z.registry<{ id: string }>()
  for (const [id, schema] of Object.entries(components)) registry.add(schema as z.ZodType, { id })
  const { schemas } = z.toJSONSchema(registry, {
    target: 'draft-2020-12',
    io: 'input',
    uri: (id) => `#/components/schemas/${id}`,
    unrepresentable: 'any',
  }) as { schemas: Record<string, Record<string, unknown>> }
  // Each component is emitted as its own document; inside the one OpenAPI document they share its root.
  for (const schema of Object.values(schemas)) {
    delete schema.$schema
    delete schema.$id
  }
  // Any route may refuse a request it cannot read (a malformed body, a bad content type) with a registry error.
  for (const operations of Object.values(paths)) for (const operation of Object.values(operations)) operation.responses.default ??= errors.default
  built = {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info: {
      title: 'Jobwire',
      version,
      description: `Stream the progress of long-running jobs. Streaming protocol version ${protocolVersion} (docs/protocol.md); WebSocket at /v1/ws.`,
      license: { name: 'MIT', identifier: 'MIT' },
    },
    servers: [{ url: '/' }],
    security: [{ bearer: [] }, { accessToken: [] }, { cookie: [] }],
    tags: ['jobs', 'events', 'streaming', 'workers', 'access', 'meta'].map((name) => ({ name })),
    paths,
    components: {
      schemas,
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'An API key, a subscription token or an app JWT' },
        accessToken: { type: 'apiKey', in: 'query', name: 'access_token', description: 'The same, for EventSource' },
        cookie: { type: 'apiKey', in: 'cookie', name: 'jobwire_token', description: 'The same, same-site browsers (--cookie-name)' },
      },
    },
  }
  return built
}


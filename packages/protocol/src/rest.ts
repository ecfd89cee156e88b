import type { ErrorBody } from './errors.js'
import type { EventType } from './events.js'
import type { ItemStatus, JobState, JobStatus, Owner } from './job.js'
import type { Metadata } from './metadata.js'
import type { StageSpec } from './stage-plan.js'

/*
 * The REST API's request and response bodies (docs/http-api.md), defined once for the server and
 * every SDK. Types only: nothing here reaches a bundle. The server's zod schemas and its OpenAPI
 * document are checked against these at compile time (packages/server/src/http/wire-check.ts), so
 * a field changed on one side and not the other fails `npm run typecheck`. Names follow the
 * OpenAPI document's components where it has one. Answers that are a job's state are `JobState`;
 * the long-poll answer is `PollResponse` (stream.ts).
 */

// ---------------------------------------------------------------- jobs

/** A job's deadline or retention: milliseconds, or a duration such as `500ms`, `10s`, `2m`, `24h`, `7d`; 0 turns it off. */
export type Duration = number | string

/** `POST /v1/jobs`; answered with the job's `JobState` (201 new, 200 the job an `idempotencyKey` made before). */
export interface CreateJobRequest {
  type: string
  input?: unknown
  owner?: Owner
  idempotencyKey?: string
  /** False when you run the job yourself and report its events; default true (workers claim it). */
  dispatch?: boolean
  maxAttempts?: number
  // Deadlines and retention; each overrides the job type's and the server's default (docs/lifecycle.md).
  /** Longest the job may run; it then fails with `timed_out`. */
  timeout?: Duration
  /** `job` (default): from its first start; `attempt`: from each start. */
  timeoutPer?: 'job' | 'attempt'
  /** A per-attempt timeout with attempts left re-queues the job instead of failing it. */
  timeoutRetryable?: boolean
  /** Longest a dispatched job may wait unclaimed; it then fails with `queue_timeout`. */
  queueTimeout?: Duration
  /** With `dispatch: false`: longest without a report or heartbeat; it then fails with `runner_lost`. */
  heartbeatTimeout?: Duration
  /** Cancel the job (reason `unwatched`) once nobody has watched it for this long. */
  cancelWhenUnwatched?: Duration
  /** How long the job is kept once finished. */
  retention?: Duration
  /** The job's stage plan (names, weights or percent ranges); overrides its type's plan from the server's config. */
  stages?: StageSpec[]
}

/** `GET /v1/jobs` query parameters; people's credentials list only their own jobs whatever these say. */
export interface ListJobsQuery {
  status?: JobStatus
  type?: string
  /** `tenant` or `tenant:user`. */
  owner?: string
  tenant?: string
  user?: string
  /** 1–200, default 50. */
  limit?: number
  /** `nextCursor` of the previous page. */
  cursor?: string
}

/** A job as a list shows it: its state without the heavy parts, and how much text it has. */
export type JobSummary = Omit<JobState, 'text' | 'input' | 'result' | 'checkpoint'> & {
  textLength: number
  /** The job is terminal. */
  finished: boolean
}

/** `GET /v1/jobs`: one page, newest first. */
export interface JobPage {
  jobs: JobSummary[]
  /** Pass it as `cursor` for the next (older) page; null after the last one. */
  nextCursor: string | null
}

/** `POST /v1/jobs/:id/cancel` (the body is optional); answered with the cancelled `JobState`. */
export interface CancelRequest {
  reason?: string
}

/** `GET /v1/jobs/:id/result`: the result in full, also one stored apart (`resultRef`); null while there is none. */
export interface JobResult {
  result: unknown
}

/** `GET /v1/jobs/:id/checkpoint`: the checkpoint in full, also one stored apart (`checkpointRef`); null while there is none. */
export interface JobCheckpoint {
  checkpoint: unknown
}

// ---------------------------------------------------------------- events

/** One event a producer (a worker, a backend running its own job) appends. */
export type ProducerEvent =
  | { type: 'started'; worker?: string }
  /** `fraction`: how far `stage` is (0–1) for a job with a stage plan; `metadata`: app data merged latest-wins per key. */
  | { type: 'progress'; stage?: string; percent?: number; message?: string; fraction?: number; metadata?: Metadata }
  | { type: 'item'; id: string; label?: string; status?: ItemStatus; percent?: number; message?: string; metadata?: Metadata }
  | { type: 'chunk'; text: string }
  | { type: 'checkpoint'; data: unknown }
  | { type: 'completed'; result?: unknown }
  | { type: 'failed'; code: string; message: string; retryable?: boolean }

/** What a worker adds to a write of a job it holds. */
export interface WriteMeta {
  /** The lease token of the claim; required for a job a worker holds. */
  lease?: string
  /** The write's number under the lease (from 1); a number seen before is a retry and appends nothing. */
  batch?: number
}

/** `POST /v1/jobs/:id/events`: one event, or an atomic batch. */
export type AppendEventsRequest = (ProducerEvent & WriteMeta) | ({ events: ProducerEvent[] } & WriteMeta)

/** One job's part of `POST /v1/events`. */
export interface JobWrite extends WriteMeta {
  jobId: string
  events: ProducerEvent[]
}

/** `POST /v1/events`: writes to many jobs, each atomic and answered on its own. */
export interface BulkWriteRequest {
  writes: JobWrite[]
}

/** `POST /v1/jobs/:id/events`: the seqs given to the events (an implicit `started` included). */
export interface AppendResponse {
  events: { seq: number; type: EventType }[]
  seq: number
  status: JobStatus
  /** A worker's batch number seen before: nothing was appended. */
  duplicate?: true
}

/** One write's answer in a `BulkWriteResponse`: what it appended, or why it was refused. */
export type BulkWriteResult = ({ jobId: string } & AppendResponse) | { jobId: string; error: ErrorBody }

/** `POST /v1/events`: one result per write, in request order. */
export interface BulkWriteResponse {
  results: BulkWriteResult[]
}

// ---------------------------------------------------------------- workers

/** `POST /v1/workers/claim` (a long-poll of up to `wait` seconds). */
export interface ClaimRequest {
  types: string[]
  worker?: string
  /** 1,000–600,000; default the server's `--lease-ms`. */
  leaseMs?: number
  wait?: number
  /** Several jobs in one claim (1–1,000): answered `ClaimList` instead of one `Claim` or 204. */
  max?: number
  /**
   * The last write of jobs this worker held and has finished, carried in its next claim: each
   * write's events end with `completed` or `failed` and carry the job's `lease` (and `batch`).
   * Each is applied, or refused, on its own, as in `POST /v1/events`; a refused one refuses
   * neither the others nor the claim. A claim that carries writes waits for no job (`wait` is not
   * held) and is answered `ClaimList` with `done`.
   */
  done?: JobWrite[]
}

/** The lease a claim grants: the token every write must carry, and when it lapses without a heartbeat. */
export interface Lease {
  token: string
  expiresAt: string
  leaseMs: number
}

/** `POST /v1/workers/claim` answer (204 when no job came within `wait`). */
export interface Claim {
  job: JobState
  lease: Lease
}

/** A claim with `max`: up to `max` jobs, oldest first, each under its own lease; empty when none came within `wait`. */
export interface ClaimList {
  claims: Claim[]
  /** The answers to the request's `done` writes, one per write in request order (present when it carried `done`). */
  done?: BulkWriteResult[]
}

/** `POST /v1/jobs/:id/heartbeat`: a worker's lease, or without `lease` a self-run job's runner. */
export interface HeartbeatRequest {
  lease?: string
  leaseMs?: number
}

export interface HeartbeatResponse {
  status: JobStatus
  cancelled: boolean
  /** When the lease lapses; for a self-run job's runner, when its `heartbeatTimeout` falls. */
  expiresAt: string | null
  /** The job's timeout ended it. */
  timedOut: boolean
}

/** `POST /v1/jobs/:id/release`; answered with the job's `JobState`, queued again. */
export interface ReleaseRequest {
  lease: string
  reason?: string
  /**
   * `false`: no handler ran the job (claimed ahead, given back unstarted), so the attempt does not
   * count (`requeued` with `counted: false`). Default `true`.
   */
  ran?: boolean
}

/** `POST /v1/workers/signals`: a long-poll over the jobs a worker holds. */
export interface SignalsRequest {
  /** 1–1,000 jobs; an empty list is refused (`400 invalid_request`). */
  jobs: { id: string; lease: string }[]
  wait?: number
}

/** Why a job is no longer its worker's to run; `timed_out`: its timeout fired (it failed, or went back to the queue). */
export type SignalReason = 'cancelled' | 'finished' | 'lease_lost' | 'timed_out'

export interface JobSignal {
  jobId: string
  reason: SignalReason
}

export interface SignalsResponse {
  signals: JobSignal[]
}

// ---------------------------------------------------------------- access

export type TokenRight = 'read' | 'cancel'

/** A minted subscription token's lifetime when none is asked for, in seconds (15 minutes): the server's `tokenTtl` default and `mintSubscriptionToken`'s. */
export const defaultTokenTtlSeconds = 900

/** The longest lifetime of a subscription token, in seconds (24 hours): the server's `tokenTtl`, a mint request's `ttl` and `mintSubscriptionToken` are capped to it. */
export const maxTokenTtlSeconds = 86_400

/** `POST /v1/tokens`: a subscription token for `jobIds`, for one `user` of a `tenant`, or `tenantWide`. */
export interface MintTokenRequest {
  jobIds?: string[]
  tenant?: string
  /** With `jobIds`: the person the token is for, so that their streams are counted together. */
  user?: string
  /** Every job of `tenant`, of any user (a team's page). */
  tenantWide?: true
  rights?: TokenRight[]
  /** Job types the holder may start and resume as `user`. */
  create?: string[]
  /** Seconds (at least 10; capped by the server's `--max-token-ttl`). */
  ttl?: number
}

/** A subscription token and when it expires. */
export interface SubscriptionToken {
  token: string
  expiresAt: string
}

export type ApiKeyRole = 'admin' | 'backend' | 'worker'

/** `POST /v1/keys`. */
export interface CreateApiKeyRequest {
  name: string
  role: ApiKeyRole
  /** Bind the key to one tenant's jobs. */
  tenant?: string
  /** For worker keys: the job types it may claim. */
  types?: string[]
}

/** An API key as listed: never its secret. */
export interface ApiKey {
  id: string
  name: string
  role: ApiKeyRole
  tenant: string | null
  types: string[] | null
  createdAt: string
  revokedAt: string | null
}

/** `POST /v1/keys` answer: the record and the key (`jwk_<id>.<secret>`), shown this once. */
export type CreatedApiKey = ApiKey & { key: string }

/** `GET /v1/keys`. */
export interface ApiKeyList {
  keys: ApiKey[]
}

/** `DELETE /v1/keys/:id`. */
export interface RevokedApiKey {
  id: string
  revoked: true
}

// ---------------------------------------------------------------- meta

/** Every error answer: a registry error (docs/errors.md) with its HTTP status. */
export interface ErrorResponse {
  error: ErrorBody
}

/** `GET /healthz`. */
export interface Health {
  ok: true
}

/** `GET /readyz` (200 ready, 503 not, and why). */
export interface Readiness {
  ok: boolean
  store: string
  reason?: string
}

import { readFileSync } from 'node:fs'
import { defaultTokenTtlSeconds, maxTokenTtlSeconds, normalizeStagePlan, type PlannedStage } from '@jobwire/protocol'
import { z } from 'zod'
import type { DeadlineSettings } from './core/store.js'

/** A duration: milliseconds as a number, or a string with a unit (`500ms`, `15s`, `10m`, `24h`, `7d`). */
export const duration = z.union([z.number(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return value
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(value.trim())
  if (match === null) {
    ctx.addIssue({ code: 'custom', message: `expected a duration like 500ms, 15s, 10m, 24h or 7d, got "${value}"` })
    return z.NEVER
  }
  const units = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const
  return Math.round(Number(match[1]) * units[(match[2] ?? 'ms') as keyof typeof units])
})

/** Longest lifetime of a minted subscription token (`--token-ttl` and a mint request's `ttl` are capped to it). */
export const maxTokenTtlMs = maxTokenTtlSeconds * 1000

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max)
/** `name=N,name=N` pairs (job types, tiers or tenants) with N from `min` to `max`. */
const countsByName = (min: number, max: number) =>
  z
    .string()
    .default('')
    .transform((value, ctx) => {
      const out: Record<string, number> = {}
      for (const pair of value.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
        const match = /^([\w.:-]+)=(\d+)$/.exec(pair)
        const n = Number(match?.[2])
        if (match === null || n < min || n > max) {
          ctx.addIssue({ code: 'custom', message: `expected name=N pairs with N from ${min} to ${max}, got "${pair}"` })
          return z.NEVER
        }
        out[match[1] as string] = n
      }
      return out
    })

const bool = z.union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no'])]).transform((v) => v === true || v === 'true' || v === '1' || v === 'yes')

/** One job type's deadlines and retention (`jobTypes`); each overrides the option of the same name. */
const jobTypeSettings = z
  .object({
    timeout: duration.pipe(z.number().min(0)).optional(),
    timeoutPer: z.enum(['job', 'attempt']).optional(),
    timeoutRetryable: z.boolean().optional(),
    queueTimeout: duration.pipe(z.number().min(0)).optional(),
    heartbeatTimeout: duration.pipe(z.number().min(0)).optional(),
    cancelWhenUnwatched: duration.pipe(z.number().min(0)).optional(),
    retention: duration.pipe(z.number().min(0)).optional(),
  })
  .strict()

export type JobTypeSettings = z.infer<typeof jobTypeSettings>

/** Config's durations (0: off) as a job's deadline settings, without the ones it leaves unset. */
export function deadlineSettings(settings: Partial<JobTypeSettings>): DeadlineSettings {
  const out: DeadlineSettings = {}
  if (settings.timeout !== undefined) out.timeoutMs = settings.timeout
  if (settings.timeoutPer !== undefined) out.timeoutPer = settings.timeoutPer
  if (settings.timeoutRetryable !== undefined) out.timeoutRetryable = settings.timeoutRetryable
  if (settings.queueTimeout !== undefined) out.queueTimeoutMs = settings.queueTimeout
  if (settings.heartbeatTimeout !== undefined) out.heartbeatTimeoutMs = settings.heartbeatTimeout
  if (settings.cancelWhenUnwatched !== undefined) out.cancelWhenUnwatchedMs = settings.cancelWhenUnwatched
  if (settings.retention !== undefined) out.retentionMs = settings.retention
  return out
}

/**
 * Every option, its default, its check and its description (the one source of
 * docs/configuration.md, written by `npm run docs`). Flags (`--heartbeat 5s`), environment
 * variables (`JOBWIRE_HEARTBEAT=5s`), a JSON config file (`{"heartbeat": "5s"}`) and the defaults
 * below are merged in that order of precedence. `defaultText` stands in for a default that is
 * not a value (generated, or depending on other options).
 */
export const configSchema = z.object({
  port: int(0, 65535).default(7070).meta({ description: 'TCP port (`0` picks a free one)' }),
  host: z.string().min(1).default('127.0.0.1').meta({ description: 'interface to listen on; `0.0.0.0` to accept other machines' }),
  dataDir: z.string().min(1).default('.jobwire').meta({ description: 'folder of `jobwire.db` (SQLite) and `admin.key`; beside the database, its write-ahead log `jobwire.db-wal` grows to at most about 128 MiB under a steady stream of writes and is then reused from its start; a clean stop checkpoints it into the database and removes it; one process uses a data directory at a time (`jobwire.db-lock`, held while it runs and released by the system if it dies: a second `jobwire serve` on it is refused)' }),
  memory: bool.default(false).meta({ description: 'keep everything in memory; nothing survives a restart' }),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').meta({ description: '`fatal`, `error`, `warn`, `info`, `debug`, `trace`, `silent`; JSON logs, pretty in a terminal' }),
  apiKey: z.string().min(16, 'must be at least 16 characters').optional().meta({ description: 'the admin key (≥ 16 characters); when unset one is generated into `<data-dir>/admin.key` (mode 0600) and printed once', defaultText: 'generated' }),
  demo: bool.default(false).meta({ description: 'demo jobs of four types, one-click demo sign-in to the dashboard (see [Demo mode](getting-started.md#demo-mode))' }),
  demoFailureRate: z.coerce.number().min(0).max(1).default(0.1).meta({ description: 'share of demo transcriptions that fail on purpose, 0 to 1; `0` makes the demo\'s outcomes deterministic (the dashboard\'s tests run it so)' }),
  heartbeat: duration.pipe(z.number().min(100)).default(15_000).meta({ description: "heartbeat interval of every stream: SSE `: heartbeat` comments, WebSocket pings and `heartbeat` messages (each stream's on its own slot of the interval, not all at once)" }),
  sseRetry: duration.pipe(z.number().min(0)).default(2_000).meta({ description: 'the `retry:` reconnect hint' }),
  sseMaxBuffer: int(64 * 1024, 1024 ** 3).default(8 * 1024 * 1024).meta({ description: 'bytes an SSE reader may fall behind before `slow_consumer`' }),
  websocket: bool.default(true).meta({ description: 'serve the WebSocket transport at `/v1/ws` (`false` refuses upgrades; clients fall back to SSE)' }),
  wsMaxMessageBytes: int(256, 16 * 1024 ** 2).default(64 * 1024).meta({ description: 'largest WebSocket message a client may send; larger: `message_too_large`, close 1009' }),
  wsMaxSubscriptions: int(1, 1_000_000).default(1000).meta({ description: 'job streams per WebSocket (its subscriptions and its user feed\'s jobs)' }),
  wsMaxBuffer: int(64 * 1024, 1024 ** 3).default(8 * 1024 * 1024).meta({ description: 'bytes a WebSocket reader may fall behind before `slow_consumer` (close 4503)' }),
  wsCoalesceAfter: int(1024, 1024 ** 3).default(64 * 1024).meta({ description: 'unsent bytes past which a WebSocket reader\'s `progress`/`item` events are coalesced' }),
  wsMessageRate: int(1, 1_000_000).default(50).meta({ description: 'client messages per second per WebSocket, sustained' }),
  wsMessageBurst: int(1, 1_000_000).default(2000).meta({ description: 'client messages per WebSocket at once; past rate and burst: `rate_limited`, close 4429. Keep it above `--ws-max-subscriptions`: a reconnect resubscribes everything at once' }),
  tokenNotice: duration.pipe(z.number().min(0)).default(60_000).meta({ description: 'how long before a credential\'s `exp` a WebSocket gets `token_expiring`' }),
  pollMaxWait: duration.pipe(z.number().min(0).max(120_000)).default(30_000).meta({ description: 'longest long-poll `wait`' }),
  maxBodyBytes: int(1024, 64 * 1024 ** 2).default(1024 * 1024).meta({ description: 'largest request body' }),
  maxBodyBytesInFlight: int(64 * 1024, 64 * 1024 ** 3)
    .default(128 * 1024 ** 2)
    .meta({ description: 'bytes of request bodies a node reads and parses at once, each counted by its `Content-Length` from its headers until it is parsed (a chunked body counts its route\'s limit). A body of 64 KiB or more that would pass it is refused before it is read with `503 overloaded` and `Retry-After`, unless nothing else is in flight; smaller bodies count but are never refused. Bounds the memory many large bodies sent at once take (a body costs a few times its size while parsed)' }),
  maxEventBytes: int(256, 16 * 1024 ** 2).default(64 * 1024).meta({ description: 'largest single event (its JSON)' }),
  maxJsonDepth: int(2, 1000).default(64).meta({ description: 'deepest nesting of objects and arrays in a JSON body or WebSocket message (the outermost counts 1); deeper: `400 invalid_request` naming the path (see [limits.md](limits.md))' }),
  maxJsonWidth: int(10, 10_000_000).default(10_000).meta({ description: 'most entries in one JSON object or array of a body or WebSocket message; more: `400 invalid_request` naming the path' }),
  maxValueBytes: int(1024, 512 * 1024 ** 2).default(16 * 1024 ** 2).meta({ description: 'largest result or checkpoint (its JSON); one larger than `--max-event-bytes` is stored once apart from the log and fetched with `GET /v1/jobs/:id/result` (or `/checkpoint`); `POST /v1/jobs/:id/events` takes bodies up to this plus 64 KiB (see [App features](app-features.md#large-results-and-checkpoints))' }),
  maxBatchEvents: int(1, 100_000).default(1000).meta({ description: 'most events in one batch' }),
  maxTextLength: int(0, 256 * 1024 ** 2).default(4 * 1024 * 1024).meta({ description: 'most characters of streamed text per job' }),
  maxItemsPerJob: int(1, 100_000).default(1000).meta({ description: 'most items (per-item progress, distinct ids) per job: every snapshot carries them all (the durable stores write only the items a write changed)' }),
  stateCacheBytes: int(1024 ** 2, 64 * 1024 ** 3)
    .default(256 * 1024 ** 2)
    .meta({ description: 'SQLite and Redis: about how many bytes of recently written jobs\' states (text, items and input included) a node keeps parsed in memory, so that the next write of such a job need not read it first; it keeps at least the states last written that weigh this much (or its last 50,000 jobs, if those weigh less) and at most about twice this. The weight is an estimate (text at 2 bytes a character); see [operating.md](operating.md#what-a-node-keeps-in-memory-per-job)' }),
  maxEventsPerJob: int(10, 10_000_000).default(1000).meta({ description: 'events kept per job log; older ones are trimmed (a resume from before them gets a `reset` snapshot)' }),
  ttlCompleted: duration.pipe(z.number().min(0)).default(24 * 3_600_000).meta({ description: 'how long completed jobs are kept' }),
  ttlFailed: duration.pipe(z.number().min(0)).default(3_600_000).meta({ description: 'how long failed jobs are kept' }),
  ttlCancelled: duration.pipe(z.number().min(0)).default(3_600_000).meta({ description: 'how long cancelled jobs are kept' }),
  sweepInterval: duration.pipe(z.number().min(100)).default(30_000).meta({ description: 'how often expired jobs are deleted' }),
  leaseTime: duration.pipe(z.number().min(1000).max(600_000)).default(30_000).meta({ description: 'lease a worker gets when its claim does not say (1 s – 10 min)' }),
  leaseSweepInterval: duration.pipe(z.number().min(50)).default(1_000).meta({ description: 'how often lapsed leases are looked for: a dead worker\'s job is re-queued within its lease plus this' }),
  maxAttempts: int(1, 100).default(3).meta({ description: 'attempts a dispatched job gets before a lost worker or a retryable failure fails it (1–100)' }),
  maxAttemptsByType: countsByName(1, 100)
    .meta({ description: 'per-type attempts, `transcription=5,agent=2`' }),
  retryBackoff: duration.pipe(z.number().min(0)).default(1_000).meta({ description: 'first delay before a retryable failure is retried; doubles per attempt, at most 60 s' }),
  jobTimeout: duration.pipe(z.number().min(0)).default(0).meta({ description: 'longest a job may run before it fails with `timed_out` (`0`: no limit); per type in `--job-types`, per job at create (`timeout`); see [Job lifecycle](lifecycle.md)', defaultText: '`0` (off)' }),
  jobTimeoutPer: z.enum(['job', 'attempt']).default('job').meta({ description: 'what the timeout measures: `job` from the job\'s first start, `attempt` from each start' }),
  jobTimeoutRetryable: bool.default(false).meta({ description: 'a per-attempt timeout with attempts left re-queues the job (with backoff) instead of failing it' }),
  queueTimeout: duration.pipe(z.number().min(0)).default(0).meta({ description: 'longest a dispatched job may wait unclaimed before it fails with `queue_timeout` (`0`: no limit)', defaultText: '`0` (off)' }),
  heartbeatTimeout: duration.pipe(z.number().min(0)).default(0).meta({ description: 'self-run jobs (`dispatch: false`): longest without an event or a heartbeat (`POST /v1/jobs/:id/heartbeat`) before they fail with `runner_lost` (`0`: no limit)', defaultText: '`0` (off)' }),
  cancelWhenUnwatched: duration.pipe(z.number().min(0)).default(0).meta({ description: 'cancel a job (reason `unwatched`) once nobody has watched it on any node for this long (`0`: never); keep it several times `--deadline-sweep-interval`', defaultText: '`0` (off)' }),
  deadlineSweepInterval: duration.pipe(z.number().min(20)).default(1_000).meta({ description: 'how often each node fires due deadlines and marks the jobs it sees watched; a deadline fires within this after it falls' }),
  jobTypes: z
    .union([z.string(), z.record(z.string(), z.unknown())])
    .default({})
    .transform((value, ctx) => {
      if (typeof value !== 'string') return value
      if (value.trim() === '') return {}
      try {
        return JSON.parse(value) as unknown
      } catch {
        ctx.addIssue({ code: 'custom', message: 'expected a JSON object of job types' })
        return z.NEVER
      }
    })
    .pipe(z.record(z.string().regex(/^[\w.:-]+$/, 'job types are letters, digits, _ . : - only'), jobTypeSettings))
    .meta({
      description:
        'per-type deadlines and retention, a JSON object (a JSON string in a flag or variable): `{"suggest": {"timeout": "2m", "queueTimeout": "10m", "retention": "1h"}}`; keys `timeout`, `timeoutPer`, `timeoutRetryable`, `queueTimeout`, `heartbeatTimeout`, `cancelWhenUnwatched`, `retention`',
    }),
  stagePlans: z
    .union([z.string(), z.record(z.string(), z.unknown())])
    .default({})
    .transform((value, ctx) => {
      let parsed: unknown = value
      if (typeof value === 'string') {
        try {
          parsed = value.trim() === '' ? {} : JSON.parse(value)
        } catch {
          ctx.addIssue({ code: 'custom', message: 'expected a JSON object of job type to stage list' })
          return z.NEVER
        }
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        ctx.addIssue({ code: 'custom', message: 'expected a JSON object of job type to stage list' })
        return z.NEVER
      }
      const out: Record<string, PlannedStage[]> = {}
      for (const [type, stages] of Object.entries(parsed)) {
        try {
          out[type] = normalizeStagePlan(stages as never)
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: `${type}: ${(error as Error).message}` })
          return z.NEVER
        }
      }
      return out
    })
    .meta({ description: 'stage plans by job type, JSON: `{"transcription": [{"name": "validating", "to": 10}, …]}` (percent ranges) or `{"export": ["query", {"name": "render", "weight": 3}]}` (weights); a job\'s own `stages` override its type\'s (see [App features](app-features.md#stage-plans))', defaultText: 'none' }),
  tokenSecret: z.string().min(32, 'must be at least 32 characters').optional().meta({ description: 'signs subscription tokens (≥ 32 characters); generated into `<data-dir>/token.secret` when unset; the same on every node', defaultText: 'generated' }),
  tokenTtl: duration.pipe(z.number().min(10_000).max(maxTokenTtlMs)).default(defaultTokenTtlSeconds * 1000).meta({ description: 'default lifetime of minted tokens (10 s – 24 h)' }),
  jwtSecret: z.string().min(16, 'must be at least 16 characters').optional().meta({ description: 'app JWTs: HS shared secret' }),
  jwtPublicKeyFile: z.string().min(1).optional().meta({ description: 'app JWTs: PEM public key' }),
  jwksUrl: z.string().url().optional().meta({ description: 'app JWTs: JWKS URL (cached 10 min)' }),
  jwksFile: z.string().min(1).optional().meta({ description: 'app JWTs: JWKS JSON file' }),
  jwtAlgorithms: z.string().optional().meta({ description: 'app JWTs: allowed algorithms', defaultText: '`HS256` / `RS256,ES256`' }),
  jwtIssuer: z.string().min(1).optional().meta({ description: 'app JWTs: required `iss`' }),
  jwtAudience: z.string().min(1).optional().meta({ description: 'app JWTs: required `aud`' }),
  jwtTenantClaim: z.string().min(1).default('tenant').meta({ description: 'claim naming the tenant' }),
  jwtUserClaim: z.string().min(1).default('sub').meta({ description: 'claim naming the user' }),
  jwtDefaultTenant: z.string().min(1).optional().meta({ description: 'tenant for tokens without the tenant claim' }),
  jwtRights: z.enum(['read', 'read,cancel']).default('read,cancel').meta({ description: 'what people may do with their own jobs: `read` or `read,cancel`' }),
  jwtCreateTypes: z
    .string()
    .default('')
    .transform((value, ctx) => {
      const types = value.split(',').map((t) => t.trim()).filter((t) => t !== '')
      const bad = types.find((t) => !/^[\w.:-]{1,100}$/.test(t))
      if (bad !== undefined) {
        ctx.addIssue({ code: 'custom', message: `expected job types (letters, digits, _ . : -), got "${bad}"` })
        return z.NEVER
      }
      return types
    })
    .meta({ description: 'job types a person with an app JWT may start and resume as their own jobs, comma-separated (see [App features](app-features.md#people-starting-their-own-jobs))', defaultText: 'none' }),
  createLimit: int(1, 1_000_000).default(10).meta({ description: 'jobs one person (the job\'s owner) may have created per window' }),
  createWindow: duration.pipe(z.number().min(1000)).default(60_000).meta({ description: 'the window of `--create-limit`' }),
  streamsPerUser: int(1, 100_000).default(5).meta({ description: 'open streams per person (user JWT or subscription token)' }),
  streamsPerIp: int(1, 1_000_000).default(100).meta({ description: 'open streams per client address, for people\'s credentials' }),
  maxConnections: int(1, 10_000_000).default(10_000).meta({ description: 'open streams per node' }),
  tenantTiers: z
    .string()
    .default('')
    .transform((value, ctx) => {
      const out: Record<string, string> = {}
      for (const pair of value.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
        const match = /^([^=\s]{1,200})=([\w.:-]{1,100})$/.exec(pair)
        if (match === null) {
          ctx.addIssue({ code: 'custom', message: `expected tenant=tier pairs, got "${pair}"` })
          return z.NEVER
        }
        out[match[1] as string] = match[2] as string
      }
      return out
    })
    .meta({ description: 'tenants\' tiers, `tenant=tier` pairs (`acme=pro,globex=free`); a tenant not listed is a tier of its own name', defaultText: 'none' }),
  createLimitByTier: countsByName(1, 1_000_000).meta({ description: '`--create-limit` per tier (or tenant), `tier=N` pairs (`pro=100,free=5`)', defaultText: 'none' }),
  streamsPerUserByTier: countsByName(1, 100_000).meta({ description: '`--streams-per-user` per tier (or tenant), `tier=N` pairs', defaultText: 'none' }),
  createLimitByType: countsByName(1, 1_000_000).meta({ description: 'jobs of a type one person may create per `--create-window`, in a bucket apart from their other jobs, `type=N` pairs (`export=2`)', defaultText: 'none' }),
  streamsPerUserByType: countsByName(1, 100_000).meta({ description: 'SSE streams of a type\'s jobs one person may hold open, besides `--streams-per-user`, `type=N` pairs (see [App features](app-features.md#per-type-and-per-tier-limits))', defaultText: 'none' }),
  corsOrigins: z.string().default('').meta({ description: 'browser origins allowed to call the API, comma-separated' }),
  cookieName: z.string().regex(/^[\w-]+$/).default('jobwire_token').meta({ description: 'cookie that may carry a credential' }),
  requestTimeout: duration.pipe(z.number().min(1000).max(600_000)).default(30_000).meta({ description: 'time to receive a request\'s headers and body' }),
  sqliteSync: z.enum(['full', 'normal']).default('full').meta({ description: '`full`: every group commit fsynced (off the event loop) before its writes are answered or published (survives power loss); `normal`: no fsync, survives `kill -9`, may lose the last commits on power loss' }),
  redis: z.string().regex(/^rediss?:\/\/\S+$/, 'expected redis://host:port or rediss://host:port').optional().meta({ description: '`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS; replaces SQLite and memory (see [Scaling on Redis](scaling-redis.md))' }),
  webhooks: z
    .string()
    .default('')
    .transform((value, ctx) => {
      const out: Record<string, string> = {}
      for (const pair of value.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
        const match = /^([\w.:-]+|\*)=(https?:\/\/\S+)$/.exec(pair)
        if (match === null) {
          ctx.addIssue({ code: 'custom', message: `expected type=http(s)://… pairs, got "${pair}"` })
          return z.NEVER
        }
        out[match[1] as string] = match[2] as string
      }
      return out
    })
    .meta({ description: 'job-lifecycle webhooks: `type=url` pairs, comma-separated, `*=url` for every other type (see [Operating](operating.md#webhooks))' }),
  webhookSecret: z.string().min(32, 'must be at least 32 characters').optional().meta({ description: 'HMAC-SHA256 key of the webhook signature (≥ 32 characters); required with `--webhooks`' }),
  webhookMaxAttempts: int(1, 50).default(8).meta({ description: 'attempts per delivery before it is given up (1–50)' }),
  webhookBackoff: duration.pipe(z.number().min(0)).default(1_000).meta({ description: 'first retry delay; doubles per attempt with full jitter, at most 60 s' }),
  redisPrefix: z.string().regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'expected 1-100 letters, digits or _ . : -').default('jobwire').meta({ description: 'prefix of every key and channel, so several deployments (or staging and production) share one Redis' }),
})

export type Config = z.infer<typeof configSchema>
export type ConfigInput = z.input<typeof configSchema>
export type ConfigKey = keyof Config

/** Every option at its default: the one definition of each default (see options.ts for what components get). */
export const configDefaults: Config = configSchema.parse({})

export const configKeys = Object.keys(configSchema.shape) as ConfigKey[]

/** Variables named otherwise than the flag: `--redis` is a URL, and `JOBWIRE_REDIS_URL` says so. */
const envNames: Partial<Record<string, string>> = { redis: 'JOBWIRE_REDIS_URL' }

export function envName(key: string): string {
  return envNames[key] ?? `JOBWIRE_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`
}

export function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`
}

/** One option as documented: how to set it, its default as a user would write it, and what it does. */
export interface ConfigOption {
  key: ConfigKey
  flag: string
  env: string
  /** `none` when the option is unset by default. */
  defaultText: string
  description: string
}

const units = [
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1000],
] as const

function durationText(ms: number): string {
  for (const [unit, size] of units) if (ms >= size && ms % size === 0) return `${ms / size}${unit}`
  return `${ms}ms`
}

function isDuration(schema: z.ZodType): boolean {
  const inner = schema instanceof z.ZodDefault ? schema.unwrap() : schema
  return inner instanceof z.ZodPipe && inner.in === duration
}

/** Every option in schema order, from the schema itself (docs/configuration.md). */
export function describeConfig(): ConfigOption[] {
  const defaults: Record<string, unknown> = configDefaults
  return configKeys.map((key) => {
    const schema = configSchema.shape[key] as z.ZodType
    const meta = schema.meta() as { description?: string; defaultText?: string } | undefined
    const value = defaults[key]
    let defaultText = meta?.defaultText
    if (defaultText === undefined) {
      if (value === undefined || value === '' || (typeof value === 'object' && value !== null && Object.keys(value).length === 0)) defaultText = 'none'
      else if (typeof value === 'number' && isDuration(schema)) defaultText = durationText(value)
      else defaultText = String(value)
    }
    return { key, flag: flagName(key), env: envName(key), defaultText, description: meta?.description ?? '' }
  })
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
    this.name = 'ConfigError'
  }
}

/** The variable naming a config file, as `--config` does. */
export const configFileEnv = 'JOBWIRE_CONFIG'

/**
 * Merges flags over `JOBWIRE_*` variables over the config file over defaults and validates the
 * result. The file is the JSON object at `flags.config`, else at `$JOBWIRE_CONFIG`, keyed like the
 * schema (`{"port": 8080, "sseRetry": "2s"}`). Every problem names where the bad value came from.
 */
export function loadConfig(flags: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const { config: fileFlag, ...optionFlags } = flags
  const filePath = typeof fileFlag === 'string' && fileFlag !== '' ? fileFlag : env[configFileEnv] || undefined
  const problems: string[] = []
  if (fileFlag !== undefined && typeof fileFlag !== 'string') problems.push('--config: expected a file path')
  const file = filePath === undefined ? {} : readConfigFile(filePath)
  const merged: Record<string, unknown> = {}
  const source: Record<string, string> = {}
  for (const key of configKeys) {
    if (file[key] !== undefined) {
      merged[key] = file[key]
      source[key] = `${key} in ${filePath}`
    }
    const fromEnv = env[envName(key)]
    if (fromEnv !== undefined && fromEnv !== '') {
      merged[key] = fromEnv
      source[key] = envName(key)
    }
    if (optionFlags[key] !== undefined) {
      merged[key] = optionFlags[key]
      source[key] = flagName(key)
    }
  }
  for (const key of Object.keys(optionFlags)) if (!configKeys.includes(key as ConfigKey)) problems.push(`${flagName(key)}: unknown option`)
  for (const key of Object.keys(file)) if (!configKeys.includes(key as ConfigKey)) problems.push(`${key} in ${filePath}: unknown option`)
  const result = configSchema.safeParse(merged)
  if (!result.success) {
    for (const issue of result.error.issues) {
      const key = String(issue.path[0] ?? '')
      const where = source[key] ?? flagName(key)
      problems.push(`${where}: ${issue.message}${key in merged ? ` (got ${JSON.stringify(merged[key])})` : ''}`)
    }
  }
  if (result.success && Object.keys(result.data.webhooks).length > 0 && result.data.webhookSecret === undefined) {
    problems.push(`${flagName('webhookSecret')}: required when ${source.webhooks ?? flagName('webhooks')} names a receiver`)
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems)
  validatedConfigs.add(result.data)
  return result.data
}

/** The options in a JSON config file; a ConfigError naming the file when it cannot be read or is not a JSON object. */
function readConfigFile(path: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    throw new ConfigError([`${path}: cannot read the config file (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`])
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new ConfigError([`${path}: not valid JSON (${(error as Error).message})`])
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError([`${path}: expected a JSON object of options`])
  return value as Record<string, unknown>
}

/** Options that hold credentials: `config print` shows whether they are set, never their value. */
const secretKeys = new Set<ConfigKey>(['apiKey', 'tokenSecret', 'jwtSecret', 'webhookSecret'])

/** The config with secrets masked (and a Redis URL's password), fit to print or log. */
export function maskedConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const key of configKeys) {
    const value = config[key]
    if (secretKeys.has(key) && value !== undefined) out[key] = '***'
    else if (key === 'redis' && typeof value === 'string') out[key] = value.replace(/\/\/([^@/]*)@/, (_, auth: string) => `//${auth.includes(':') ? `${auth.split(':')[0]}:***` : '***'}@`)
    else out[key] = value ?? null
  }
  return out
}

const validatedConfigs = new WeakSet<object>()

/** Whether `value` came out of loadConfig (so it need not, and cannot, be validated again). */
export function isValidatedConfig(value: unknown): value is Config {
  return typeof value === 'object' && value !== null && validatedConfigs.has(value)
}

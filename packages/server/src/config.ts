import { readFileSync } from 'node:fs'
import { z } from 'zod'

/** A duration: milliseconds as a number, or a string with a unit (`500ms`, `15s`, `10m`, `24h`, `7d`). */
const duration = z.union([z.number(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return value
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(value.trim())
  if (match === null) {
    ctx.addIssue({ code: 'custom', message: `expected a duration like 500ms, 15s, 10m, 24h or 7d, got "${value}"` })
    return z.NEVER
  }
  const units = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const
  return Math.round(Number(match[1]) * units[(match[2] ?? 'ms') as keyof typeof units])
})

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max)
const bool = z.union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no'])]).transform((v) => v === true || v === 'true' || v === '1' || v === 'yes')

/**
 * Every option, its default and its check. Flags (`--heartbeat 5s`), environment variables
 * (`JOBWIRE_HEARTBEAT=5s`), a JSON config file (`{"heartbeat": "5s"}`) and the defaults below are
 * merged in that order of precedence.
 */
export const configSchema = z.object({
  /** TCP port (0 picks a free one). */
  port: int(0, 65535).default(7070),
  /** Interface to listen on; 0.0.0.0 to accept other machines. */
  host: z.string().min(1).default('127.0.0.1'),
  /** Folder of the SQLite file and the generated admin key. */
  dataDir: z.string().min(1).default('.jobwire'),
  /** Keep everything in memory (nothing survives a restart). */
  memory: bool.default(false),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Admin API key; generated into the data directory when unset. */
  apiKey: z.string().min(16, 'must be at least 16 characters').optional(),
  /** Run the built-in demo: demo jobs of every type and a page at `/`. */
  demo: bool.default(false),
  /** SSE heartbeat comment interval. */
  heartbeat: duration.pipe(z.number().min(100)).default(15_000),
  /** Reconnect delay hinted to SSE clients (`retry:`). */
  sseRetry: duration.pipe(z.number().min(0)).default(2_000),
  /** Bytes an SSE client may fall behind before it is closed with `slow_consumer` (it can resume). */
  sseMaxBuffer: int(64 * 1024, 1024 ** 3).default(8 * 1024 * 1024),
  /** Serve the WebSocket transport at `/v1/ws` (one socket, many job streams, the user feed). */
  websocket: bool.default(true),
  /** Largest WebSocket message a client may send, in bytes; a larger one closes the socket with 1009. */
  wsMaxMessageBytes: int(256, 16 * 1024 ** 2).default(64 * 1024),
  /** Job streams one WebSocket may hold (its own subscriptions and its user feed's jobs together). */
  wsMaxSubscriptions: int(1, 1_000_000).default(1000),
  /** Bytes a WebSocket reader may fall behind before it is closed with `slow_consumer` (it can resume). */
  wsMaxBuffer: int(64 * 1024, 1024 ** 3).default(8 * 1024 * 1024),
  /** Once this many bytes wait unsent on a WebSocket, its latest-wins events (progress, item) are coalesced. */
  wsCoalesceAfter: int(1024, 1024 ** 3).default(64 * 1024),
  /** Messages per second a WebSocket client may send on average… */
  wsMessageRate: int(1, 1_000_000).default(50),
  /** …and in one burst (keep it above `wsMaxSubscriptions`: a reconnect resubscribes everything at once); past that the socket closes with `rate_limited`. */
  wsMessageBurst: int(1, 1_000_000).default(2000),
  /** How long before a credential's `exp` a WebSocket gets its `token_expiring` notice. */
  tokenNotice: duration.pipe(z.number().min(0)).default(60_000),
  /** Longest `wait` a long-poll may ask for. */
  pollMaxWait: duration.pipe(z.number().min(0).max(120_000)).default(30_000),
  /** Largest request body in bytes. */
  maxBodyBytes: int(1024, 64 * 1024 ** 2).default(1024 * 1024),
  /** Largest single event (its JSON) in bytes. */
  maxEventBytes: int(256, 16 * 1024 ** 2).default(64 * 1024),
  /** Most events in one batch. */
  maxBatchEvents: int(1, 100_000).default(1000),
  /** Most characters of streamed text per job. */
  maxTextLength: int(0, 256 * 1024 ** 2).default(4 * 1024 * 1024),
  /** Events kept per job log; older ones are trimmed (a resume from there gets a snapshot). */
  maxEventsPerJob: int(10, 10_000_000).default(1000),
  /** How long finished jobs are kept. */
  ttlCompleted: duration.pipe(z.number().min(0)).default(24 * 3_600_000),
  ttlFailed: duration.pipe(z.number().min(0)).default(3_600_000),
  ttlCancelled: duration.pipe(z.number().min(0)).default(3_600_000),
  /** How often expired jobs are swept. */
  sweepInterval: duration.pipe(z.number().min(100)).default(30_000),
  /** Lease a worker gets when its claim does not say. */
  leaseTime: duration.pipe(z.number().min(1000).max(600_000)).default(30_000),
  /** How often lapsed leases are looked for: a dead worker's job is re-queued within its lease plus this. */
  leaseSweepInterval: duration.pipe(z.number().min(50)).default(1_000),
  /** Attempts a dispatched job gets before a lost worker or retryable failure fails it. */
  maxAttempts: int(1, 100).default(3),
  /** Per-type attempts, `type=N,type=N` (e.g. `transcription=5,agent=2`). */
  maxAttemptsByType: z
    .string()
    .default('')
    .transform((value, ctx) => {
      const out: Record<string, number> = {}
      for (const pair of value.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
        const match = /^([\w.:-]+)=(\d+)$/.exec(pair)
        const n = Number(match?.[2])
        if (match === null || n < 1 || n > 100) {
          ctx.addIssue({ code: 'custom', message: `expected type=N pairs with N from 1 to 100, got "${pair}"` })
          return z.NEVER
        }
        out[match[1] as string] = n
      }
      return out
    }),
  /** First delay before a retryable failure is retried; doubles per attempt, at most 60 s. */
  retryBackoff: duration.pipe(z.number().min(0)).default(1_000),
  /** Secret that signs subscription tokens (≥ 32 characters); generated into the data directory when unset. Set the same one on every node. */
  tokenSecret: z.string().min(32, 'must be at least 32 characters').optional(),
  /** Default lifetime of a minted subscription token (at most 24 h). */
  tokenTtl: duration.pipe(z.number().min(10_000).max(24 * 3_600_000)).default(15 * 60_000),
  /** App JWTs: an HS256/384/512 shared secret. */
  jwtSecret: z.string().min(16, 'must be at least 16 characters').optional(),
  /** App JWTs: path of a PEM public key. */
  jwtPublicKeyFile: z.string().min(1).optional(),
  /** App JWTs: a JWKS URL (fetched and cached). */
  jwksUrl: z.string().url().optional(),
  /** App JWTs: path of a JWKS JSON file. */
  jwksFile: z.string().min(1).optional(),
  /** App JWTs: allowed algorithms, comma-separated (default HS256 for a secret, RS256,ES256 for public keys). */
  jwtAlgorithms: z.string().optional(),
  jwtIssuer: z.string().min(1).optional(),
  jwtAudience: z.string().min(1).optional(),
  /** Claim with the tenant; `jwtDefaultTenant` is used when a token has none. */
  jwtTenantClaim: z.string().min(1).default('tenant'),
  jwtUserClaim: z.string().min(1).default('sub'),
  jwtDefaultTenant: z.string().min(1).optional(),
  /** What a person with an app JWT may do with their own jobs: `read` or `read,cancel`. */
  jwtRights: z.enum(['read', 'read,cancel']).default('read,cancel'),
  /** Jobs one person (the job's owner) may have created per `createWindow`. */
  createLimit: int(1, 1_000_000).default(10),
  createWindow: duration.pipe(z.number().min(1000)).default(60_000),
  /** Open streams per person (user JWT or subscription token). */
  streamsPerUser: int(1, 100_000).default(5),
  /** Open streams per client IP address, for people's credentials. */
  streamsPerIp: int(1, 1_000_000).default(100),
  /** Open streams per node, whoever holds them. */
  maxConnections: int(1, 10_000_000).default(10_000),
  /** Browser origins allowed to call the API (comma-separated); `*` for any, without credentials. */
  corsOrigins: z.string().default(''),
  /** Cookie that may carry a credential for same-site browsers. */
  cookieName: z.string().regex(/^[\w-]+$/).default('jobwire_token'),
  /** Longest time to receive a request (headers and body). */
  requestTimeout: duration.pipe(z.number().min(1000).max(600_000)).default(30_000),
  /** SQLite durability: `full` fsyncs every commit; `normal` survives kill -9 but not power loss. */
  sqliteSync: z.enum(['full', 'normal']).default('full'),
  /** Redis URL (`redis://host:6379`, `rediss://` for TLS): nodes sharing it serve the same jobs. Overrides SQLite and memory. */
  redis: z.string().regex(/^rediss?:\/\/\S+$/, 'expected redis://host:port or rediss://host:port').optional(),
  /** Job-lifecycle webhooks: `type=url` pairs, comma-separated, `*=url` for every other type; POSTed when a job of that type ends. */
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
    }),
  /** Key of the webhooks' HMAC-SHA256 signature (≥ 32 characters); required with `webhooks`. */
  webhookSecret: z.string().min(32, 'must be at least 32 characters').optional(),
  /** Attempts per webhook delivery before it is given up. */
  webhookMaxAttempts: int(1, 50).default(8),
  /** First delay before a webhook is retried; doubles per attempt (full jitter), at most 60 s. */
  webhookBackoff: duration.pipe(z.number().min(0)).default(1_000),
  /** Prefix of every Redis key and channel, so several deployments can share one Redis. */
  redisPrefix: z.string().regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'expected 1-100 letters, digits or _ . : -').default('jobwire'),
})

export type Config = z.infer<typeof configSchema>
export type ConfigInput = z.input<typeof configSchema>
export type ConfigKey = keyof Config

export const configKeys = Object.keys(configSchema.shape) as ConfigKey[]

/** Variables named otherwise than the flag: `--redis` is a URL, and `JOBWIRE_REDIS_URL` says so. */
const envNames: Partial<Record<string, string>> = { redis: 'JOBWIRE_REDIS_URL' }

export function envName(key: string): string {
  return envNames[key] ?? `JOBWIRE_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`
}

export function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`
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
export function readConfigFile(path: string): Record<string, unknown> {
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

import type { CoreLimits } from './core/jobs.js'
import type { JsonShapeLimits } from './core/json-shape.js'
import type { Retention } from './core/store.js'
import type { AppJwtOptions } from './auth/app-jwt.js'
import type { LimitSettings } from './http/limits.js'
import type { SseOptions } from './transports/sse.js'
import type { WsOptions } from './transports/ws.js'
import type { WebhookSettings } from './webhooks.js'
import { configDefaults, deadlineSettings, maxTokenTtlMs, type Config } from './config.js'

/**
 * The one place where the parsed config becomes each component's options. Components take their
 * options whole (no defaults of their own): every default lives in the config schema
 * (config.ts), and the `default*` values below are the schema's defaults mapped the same way, for
 * whoever builds a component without a config (embedders, tests).
 */

/** How long finished jobs are kept and how much log each keeps (every store). */
export function retentionOptions(config: Config): Retention {
  return {
    maxEventsPerJob: config.maxEventsPerJob,
    ttlMs: { completed: config.ttlCompleted, failed: config.ttlFailed, cancelled: config.ttlCancelled },
  }
}

/** Where the stores keep their data: the Redis URL and key prefix, or null when Redis is not configured. */
export function redisConnection(config: Config): { url: string; prefix: string } | null {
  return config.redis === undefined ? null : { url: config.redis, prefix: config.redisPrefix }
}

/** JobService's limits, retries, deadlines and stage plans. */
export function coreLimits(config: Config): CoreLimits {
  return {
    maxTextLength: config.maxTextLength,
    maxItemsPerJob: config.maxItemsPerJob,
    inlineValueBytes: config.maxEventBytes,
    maxAttempts: config.maxAttempts,
    maxAttemptsByType: config.maxAttemptsByType,
    retryBackoffMs: config.retryBackoff,
    deadlines: deadlineSettings({
      timeout: config.jobTimeout,
      timeoutPer: config.jobTimeoutPer,
      timeoutRetryable: config.jobTimeoutRetryable,
      queueTimeout: config.queueTimeout,
      heartbeatTimeout: config.heartbeatTimeout,
      cancelWhenUnwatched: config.cancelWhenUnwatched,
    }),
    deadlinesByType: Object.fromEntries(Object.entries(config.jobTypes).map(([type, settings]) => [type, deadlineSettings(settings)])),
    stagePlans: config.stagePlans,
  }
}

/** Create-rate and open-stream limits (http/limits.ts). */
export function limitSettings(config: Config): LimitSettings {
  return {
    createLimit: config.createLimit,
    createWindowMs: config.createWindow,
    streamsPerUser: config.streamsPerUser,
    streamsPerIp: config.streamsPerIp,
    maxConnections: config.maxConnections,
    maxBodyBytesInFlight: config.maxBodyBytesInFlight,
    tenantTiers: config.tenantTiers,
    createLimitByTier: config.createLimitByTier,
    streamsPerUserByTier: config.streamsPerUserByTier,
    createLimitByType: config.createLimitByType,
    streamsPerUserByType: config.streamsPerUserByType,
  }
}

/** What the routes read: waits, sizes, leases, token lifetimes. */
export interface RouteSettings {
  pollMaxWaitMs: number
  maxEventBytes: number
  /** Largest result or checkpoint; the single-job events route takes bodies of this plus 64 KiB. */
  maxValueBytes: number
  maxBodyBytes: number
  maxBatchEvents: number
  /** Lease length when a worker does not ask for one. */
  defaultLeaseMs: number
  tokenTtlSeconds: number
  maxTokenTtlSeconds: number
}

/** The HTTP layer's settings (buildApp): the routes' plus the server's own. */
export interface HttpSettings extends RouteSettings {
  /** Nesting and width allowed in a JSON body or WebSocket message. */
  jsonShape: JsonShapeLimits
  /** Origins allowed to call from a browser (CORS); `*` allows any origin, without credentials. */
  corsOrigins: string[]
  /** Cookie that may carry a credential (browsers on the same site). */
  cookieName: string
  /** Longest time to receive a request's headers and body (slowloris). */
  requestTimeoutMs: number
}

function jsonShapeLimits(config: Config): JsonShapeLimits {
  return { maxDepth: config.maxJsonDepth, maxWidth: config.maxJsonWidth }
}

export function httpSettings(config: Config): HttpSettings {
  return {
    pollMaxWaitMs: config.pollMaxWait,
    maxEventBytes: config.maxEventBytes,
    maxValueBytes: config.maxValueBytes,
    maxBodyBytes: config.maxBodyBytes,
    maxBatchEvents: config.maxBatchEvents,
    defaultLeaseMs: config.leaseTime,
    tokenTtlSeconds: Math.round(config.tokenTtl / 1000),
    maxTokenTtlSeconds: maxTokenTtlMs / 1000,
    jsonShape: jsonShapeLimits(config),
    corsOrigins: config.corsOrigins.split(',').map((o) => o.trim()).filter((o) => o !== ''),
    cookieName: config.cookieName,
    requestTimeoutMs: config.requestTimeout,
  }
}

/** The SSE transport's settings (its metric hooks come from the HTTP layer). */
export type SseSettings = Omit<SseOptions, 'onSlowConsumer' | 'onDelivered'>

export function sseSettings(config: Config): SseSettings {
  return { heartbeatMs: config.heartbeat, retryMs: config.sseRetry, maxBufferBytes: config.sseMaxBuffer }
}

/** The WebSocket transport's settings, or null when `--websocket false` turns it off. */
export type WsSettings = Omit<WsOptions, 'onSlowConsumer' | 'onDelivered'>

export function wsSettings(config: Config): WsSettings | null {
  if (!config.websocket) return null
  return {
    heartbeatMs: config.heartbeat,
    maxMessageBytes: config.wsMaxMessageBytes,
    maxSubscriptions: config.wsMaxSubscriptions,
    maxBufferBytes: config.wsMaxBuffer,
    coalesceAfterBytes: config.wsCoalesceAfter,
    messageRate: config.wsMessageRate,
    messageBurst: config.wsMessageBurst,
    tokenNoticeMs: config.tokenNotice,
    jsonShape: jsonShapeLimits(config),
  }
}

/** Webhook deliveries, or null when no receiver (or no secret) is configured. */
export function webhookSettings(config: Config): WebhookSettings | null {
  if (Object.keys(config.webhooks).length === 0 || config.webhookSecret === undefined) return null
  return { urls: config.webhooks, secret: config.webhookSecret, maxAttempts: config.webhookMaxAttempts, backoffMs: config.webhookBackoff }
}

/** The app-JWT verifier's options, or null when no key is configured. */
export function appJwtOptions(config: Config): AppJwtOptions | null {
  const { jwtSecret, jwtPublicKeyFile, jwksUrl, jwksFile } = config
  if (jwtSecret === undefined && jwtPublicKeyFile === undefined && jwksUrl === undefined && jwksFile === undefined) return null
  const algorithms = config.jwtAlgorithms?.split(',').map((a) => a.trim()).filter((a) => a !== '') ??
    (jwtSecret !== undefined ? ['HS256'] : ['RS256', 'ES256'])
  return {
    secret: jwtSecret,
    publicKeyFile: jwtPublicKeyFile,
    jwksUrl,
    jwksFile,
    algorithms,
    issuer: config.jwtIssuer,
    audience: config.jwtAudience,
    tenantClaim: config.jwtTenantClaim,
    userClaim: config.jwtUserClaim,
    defaultTenant: config.jwtDefaultTenant,
    rights: config.jwtRights === 'read' ? ['read'] : ['read', 'cancel'],
    createTypes: config.jwtCreateTypes,
  }
}

/** The config schema's defaults as JobService limits. */
export const defaultCoreLimits: CoreLimits = coreLimits(configDefaults)
/** The config schema's defaults as a store's retention. */
export const defaultRetention: Retention = retentionOptions(configDefaults)

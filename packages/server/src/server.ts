import type { ServerResponse } from 'node:http'
import { join, resolve } from 'node:path'
import pino, { type Logger } from 'pino'
import type { FastifyInstance } from 'fastify'
import { Dispatcher } from './core/dispatch.js'
import { JobService } from './core/jobs.js'
import type { Store } from './core/store.js'
import { isValidatedConfig, loadConfig, type Config, type ConfigInput } from './config.js'
import {
  appJwtOptions,
  coreLimits,
  httpSettings,
  limitSettings,
  redisConnection,
  retentionOptions,
  sseSettings,
  webhookSettings,
  wsSettings,
} from './options.js'
import { buildApp } from './http/app.js'
import { randomBytes } from 'node:crypto'
import { AppJwtVerifier } from './auth/app-jwt.js'
import { Authenticator } from './auth/authenticator.js'
import { generateAdminKey, resolveSecret } from './auth/secrets.js'
import { Limits } from './http/limits.js'
import { Metrics } from './metrics.js'
import { MemoryKeyStore, MemoryRateCounter, MemoryStreamCounter } from './stores/memory-keys.js'
import { SqliteKeyStore } from './stores/sqlite-keys.js'
import { MemoryStore } from './stores/memory-store.js'
import { SqliteStore } from './stores/sqlite-store.js'
import { RedisStore } from './stores/redis/store.js'
import { RedisCredentials } from './stores/redis/credentials.js'
import { combineObservers } from './core/observer.js'
import { Webhooks } from './webhooks.js'
import { jobLifecycleLog } from './job-log.js'
import { FailureLog } from './failure-log.js'

/** How long a shutdown waits for requests in flight (writes, creates, claims) before closing their sockets. */
const inFlightGraceMs = 10_000

/** The admin key in force and where it came from, so `serve` can say so once. */
interface AdminKey {
  key: string
  source: 'config' | 'file' | 'generated'
  path: string | null
}

export interface RunningServer {
  url: string
  port: number
  config: Config
  adminKey: AdminKey
  service: JobService
  dispatcher: Dispatcher
  auth: Authenticator
  app: FastifyInstance
  /** Path of the SQLite file, or null in memory and Redis modes. */
  databasePath: string | null
  close(): Promise<void>
}

export interface StartOptions {
  /** Options as flags would give them (validated here; environment variables are not read), or a loadConfig() result. */
  config?: ConfigInput | Config
  logger?: Logger | false
  /** Use this store instead of the one the config names (tests). */
  store?: Store
}

/**
 * Credentials never reach a log line, whatever logs them. `err.rawPacket`: Node's HTTP parser
 * errors carry the raw request bytes (query string and headers), which Fastify logs at trace.
 */
const redact = {
  paths: [
    ...['apiKey', 'token', 'key', 'lease', 'secret', 'password', 'authorization', 'cookie'].flatMap((name) => [name, `*.${name}`]),
    'req.headers.authorization',
    'req.headers.cookie',
    'headers.authorization',
    'headers.cookie',
    'err.rawPacket',
  ],
  censor: '[redacted]',
}

export function createLogger(level: Config['logLevel'], pretty: boolean): Logger {
  if (!pretty) return pino({ level, redact })
  return pino({ level, redact }, pino.transport({ target: 'pino-pretty', options: { colorize: true, singleLine: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss' } }))
}

/** Starts a Jobwire node: store, core, HTTP, sweeps. `close()` stops all of it. */
export async function startServer(options: StartOptions = {}): Promise<RunningServer> {
  const config = isValidatedConfig(options.config) ? options.config : loadConfig((options.config ?? {}) as Record<string, unknown>, {})
  // Redaction holds for a logger the caller brings too, not only for ours.
  const logger = options.logger === false ? false : (options.logger ?? createLogger(config.logLevel, false)).child({}, { redact })
  const retention = retentionOptions(config)
  const dataDir = config.memory ? null : resolve(config.dataDir)
  const databasePath = dataDir === null || config.redis !== undefined ? null : join(dataDir, 'jobwire.db')
  const redis = redisConnection(config)
  const store =
    options.store ??
    (redis !== null
      ? new RedisStore({
          ...redis,
          retention,
          cacheBytes: config.stateCacheBytes,
          onWarning: (message, details) => logger && logger.warn(details ?? {}, message),
        })
      : databasePath === null
        ? new MemoryStore({ retention })
        : new SqliteStore({ path: databasePath, retention, synchronous: config.sqliteSync, cacheBytes: config.stateCacheBytes }))
  // On Redis, API keys, rate limits and stream limits are shared by every node too.
  const shared =
    redis !== null && store instanceof RedisStore
      ? new RedisCredentials({ ...redis, onWarning: (message, details) => logger && logger.warn(details ?? {}, message) })
      : null
  // Serve once Redis answers; if it does not yet, serve anyway: /readyz is red and calls get 503 until it does.
  if (store instanceof RedisStore) {
    const [ready, sharedReady] = await Promise.all([store.waitUntilReady(5_000), shared?.waitUntilReady(5_000) ?? true])
    if (!(ready && sharedReady) && logger) logger.warn('Redis is not reachable yet: answering 503 until it is')
  }
  const metrics = new Metrics()
  if (store instanceof RedisStore) metrics.trackRedis(() => store.live)
  if (store instanceof RedisStore || store instanceof SqliteStore) metrics.trackStateCache(() => store.stateCache)
  const webhookOptions = webhookSettings(config)
  const webhooks =
    webhookOptions === null
      ? null
      : new Webhooks(
          webhookOptions,
          (outcome, detail) => {
            metrics.webhookDeliveries.inc({ outcome })
            if (outcome !== 'delivered' && logger) logger.warn(detail, outcome === 'failed' ? 'webhook given up' : 'webhook failed, retrying')
          },
        )
  const service = new JobService(
    store,
    coreLimits(config),
    undefined,
    combineObservers(
      metrics.observer,
      ...(webhooks === null ? [] : [webhooks.observer]),
      ...(logger === false ? [] : [jobLifecycleLog(logger)]),
    ),
  )
  const dispatcher = new Dispatcher(service)
  const admin = resolveSecret(config.apiKey, dataDir, 'admin.key', generateAdminKey)
  const adminKey: AdminKey = { key: admin.value, source: admin.source, path: admin.path }
  const tokenSecret = resolveSecret(config.tokenSecret, dataDir, 'token.secret', () => randomBytes(32).toString('base64url'))
  const keys = shared ?? (databasePath === null ? new MemoryKeyStore() : new SqliteKeyStore(databasePath))
  const jwtOptions = appJwtOptions(config)
  const auth = new Authenticator({
    adminKey: adminKey.key,
    keys,
    tokenSecret: new TextEncoder().encode(tokenSecret.value),
    appJwt: jwtOptions === null ? null : new AppJwtVerifier(jwtOptions),
  })
  const limits = new Limits(
    limitSettings(config),
    shared ?? new MemoryRateCounter(),
    shared ?? new MemoryStreamCounter(),
    metrics,
  )
  // The demo (and the worker SDK it runs on) loads only with --demo: the server itself imports no SDK.
  const demo = config.demo ? (await import('./demo/demo.js')).createDemo(service, dispatcher, logger || undefined, { failureRate: config.demoFailureRate }) : null
  // When each sweep last finished without error; /readyz turns red when one falls behind.
  const lastSweep = { expiry: Date.now(), leases: Date.now(), deadlines: Date.now() }
  const { app, sse, endLongPolls } = await buildApp({
    service,
    auth,
    limits,
    metrics,
    logger,
    http: httpSettings(config),
    sse: sseSettings(config),
    websocket: wsSettings(config),
    dispatcher,
    sweepProblem: () => sweepProblem(lastSweep, config),
    plugins: demo === null ? [] : [demo.register],
  })

  // A sweep that keeps failing (the store is down) is logged once, then reminded every minute, then its recovery.
  const failures = new FailureLog(logger)
  const sweep = setInterval(() => {
    service.sweep().then(
      ({ expiredJobs }) => {
        lastSweep.expiry = Date.now()
        failures.succeeded('sweep')
        if (expiredJobs > 0) metrics.jobsExpired.inc(expiredJobs)
        if (expiredJobs > 0 && logger) logger.debug({ expiredJobs }, 'swept expired jobs')
      },
      (error: unknown) => failures.failed('sweep', error),
    )
  }, config.sweepInterval)
  sweep.unref()
  let reclaiming = false
  const leaseSweep = setInterval(() => {
    if (reclaiming) return
    reclaiming = true
    dispatcher
      .reclaimLapsed()
      .then(
        (reclaimed) => {
          lastSweep.leases = Date.now()
          failures.succeeded('lease sweep')
          if (reclaimed > 0 && logger) logger.info({ reclaimed }, 'took back jobs from workers that stopped heartbeating')
        },
        (error: unknown) => failures.failed('lease sweep', error),
      )
      .finally(() => (reclaiming = false))
  }, config.leaseSweepInterval)
  leaseSweep.unref()
  // Firing deadlines and marking watched jobs run apart: a slow round of one never delays the other.
  let firing = false
  let refreshing = false
  const deadlineSweep = setInterval(() => {
    if (!firing) {
      firing = true
      service.deadlines
        .fireDue()
        .then(
          (fired) => {
            lastSweep.deadlines = Date.now()
            failures.succeeded('deadline sweep')
            if (fired > 0 && logger) logger.debug({ fired }, 'fired job deadlines')
          },
          (error: unknown) => failures.failed('deadline sweep', error),
        )
        .finally(() => (firing = false))
    }
    if (!refreshing) {
      refreshing = true
      service.deadlines
        .refreshWatched()
        .then(
          () => failures.succeeded('marking watched jobs'),
          (error: unknown) => failures.failed('marking watched jobs', error),
        )
        .finally(() => (refreshing = false))
    }
  }, config.deadlineSweepInterval)
  deadlineSweep.unref()

  // Requests in progress, so that a shutdown lets them finish (streams and long-polls end first).
  let inFlight = 0
  let drained: () => void = () => {}
  app.server.on('request', (_request, response: ServerResponse) => {
    inFlight++
    response.once('close', () => {
      if (--inFlight === 0) drained()
    })
  })
  // Runs once app.close() answers new requests 503, before it closes the sockets left.
  app.addHook('preClose', async () => {
    if (inFlight === 0) return
    await new Promise<void>((resolve) => {
      drained = resolve
      setTimeout(resolve, inFlightGraceMs).unref()
    })
  })

  await app.listen({ port: config.port, host: config.host })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : config.port
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`
  await demo?.start(url, adminKey.key)

  let closing: Promise<void> | null = null
  return {
    url,
    port,
    config,
    adminKey,
    service,
    dispatcher,
    auth,
    app,
    databasePath,
    close() {
      closing ??= (async () => {
        clearInterval(sweep)
        clearInterval(leaseSweep)
        clearInterval(deadlineSweep)
        // Workers we run give their jobs back (through this node's API, so it still serves them).
        await demo?.stop()
        // No new connections: clients told to reconnect below are refused here, so they go to
        // another node or retry until this one is back, never to a node on its way out.
        app.server.close()
        // SSE streams end with a short retry:, WebSockets close with 1001, long-polls answer now.
        sse.shutdown()
        endLongPolls()
        // Requests in flight finish (see the preClose hook), then the sockets left are closed.
        await app.close()
        webhooks?.close()
        dispatcher.close()
        await store.close()
        await keys.close()
      })()
      return closing
    },
  }
}

/**
 * A sweep that has not finished for three of its intervals (plus a second of slack) is stuck or
 * failing: expired jobs pile up, or a dead worker's jobs are never taken back.
 */
function sweepProblem(last: { expiry: number; leases: number; deadlines: number }, config: Config): string | null {
  const now = Date.now()
  const sweeps = [
    ['lease sweep', last.leases, config.leaseSweepInterval],
    ['expiry sweep', last.expiry, config.sweepInterval],
    ['deadline sweep', last.deadlines, config.deadlineSweepInterval],
  ] as const
  for (const [name, at, interval] of sweeps) {
    if (now - at > 3 * interval + 1_000) return `the ${name} has not completed for ${Math.round((now - at) / 1000)} s`
  }
  return null
}

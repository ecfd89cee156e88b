import { join, resolve } from 'node:path'
import pino, { type Logger } from 'pino'
import type { FastifyInstance } from 'fastify'
import { Dispatcher } from './core/dispatch.js'
import { JobService } from './core/jobs.js'
import type { Store } from './core/store.js'
import { isValidatedConfig, loadConfig, type Config, type ConfigInput } from './config.js'
import { buildApp } from './http/app.js'
import { resolveAdminKey, type AdminKey } from './http/auth.js'
import { MemoryStore } from './stores/memory-store.js'
import { SqliteStore } from './stores/sqlite-store.js'
import { createDemo } from './demo/demo.js'

export interface RunningServer {
  url: string
  port: number
  config: Config
  adminKey: AdminKey
  service: JobService
  dispatcher: Dispatcher
  app: FastifyInstance
  /** Path of the SQLite file, or null in memory mode. */
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

export function createLogger(level: Config['logLevel'], pretty: boolean): Logger {
  if (!pretty) return pino({ level, redact: ['req.headers.authorization', '*.apiKey', '*.token'] })
  return pino({ level }, pino.transport({ target: 'pino-pretty', options: { colorize: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss' } }))
}

/** Starts a Jobwire node: store, core, HTTP, sweeps. `close()` stops all of it. */
export async function startServer(options: StartOptions = {}): Promise<RunningServer> {
  const config = isValidatedConfig(options.config) ? options.config : loadConfig((options.config ?? {}) as Record<string, unknown>, {})
  const logger = options.logger ?? createLogger(config.logLevel, false)
  const retention = {
    maxEventsPerJob: config.maxEventsPerJob,
    ttlMs: { completed: config.ttlCompleted, failed: config.ttlFailed, cancelled: config.ttlCancelled },
  }
  const dataDir = config.memory ? null : resolve(config.dataDir)
  const databasePath = dataDir === null ? null : join(dataDir, 'jobwire.db')
  const store =
    options.store ??
    (databasePath === null
      ? new MemoryStore({ retention })
      : new SqliteStore({ path: databasePath, retention, synchronous: config.sqliteSync }))
  const service = new JobService(store, {
    maxTextLength: config.maxTextLength,
    maxAttempts: config.maxAttempts,
    maxAttemptsByType: config.maxAttemptsByType,
    retryBackoffMs: config.retryBackoff,
  })
  const dispatcher = new Dispatcher(service)
  const adminKey = resolveAdminKey(config.apiKey, dataDir)
  const demo = config.demo ? createDemo(service, logger || undefined) : null
  const { app } = await buildApp({
    service,
    adminKey: adminKey.key,
    logger,
    heartbeatMs: config.heartbeat,
    sseRetryMs: config.sseRetry,
    sseMaxBufferBytes: config.sseMaxBuffer,
    pollMaxWaitMs: config.pollMaxWait,
    maxBodyBytes: config.maxBodyBytes,
    maxEventBytes: config.maxEventBytes,
    maxBatchEvents: config.maxBatchEvents,
    defaultLeaseMs: config.leaseTime,
    dispatcher,
    plugins: demo === null ? [] : [demo.register],
  })

  const sweep = setInterval(() => {
    service.sweep().then(
      ({ expiredJobs }) => expiredJobs > 0 && logger && logger.debug({ expiredJobs }, 'swept expired jobs'),
      (error: unknown) => logger && logger.warn({ err: error }, 'sweep failed'),
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
        (reclaimed) => reclaimed > 0 && logger && logger.info({ reclaimed }, 'took back jobs from workers that stopped heartbeating'),
        (error: unknown) => logger && logger.warn({ err: error }, 'lease sweep failed'),
      )
      .finally(() => (reclaiming = false))
  }, config.leaseSweepInterval)
  leaseSweep.unref()

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
    app,
    databasePath,
    close() {
      closing ??= (async () => {
        clearInterval(sweep)
        clearInterval(leaseSweep)
        await demo?.stop()
        await app.close()
        await store.close()
      })()
      return closing
    },
  }
}

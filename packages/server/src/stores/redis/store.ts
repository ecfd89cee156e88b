import { randomBytes } from 'node:crypto'
import { JobwireError } from '@jobwire/protocol'
import { configDefaults } from '../../config.js'
import type { Retention, Store } from '../../core/store.js'
import { defaultRetention } from '../../options.js'
import { RedisCommits } from './commits.js'
import { RedisConnection } from './connection.js'
import { RedisEpochs } from './epochs.js'
import { RedisKeys } from './keys.js'
import { RedisNotifications } from './notifications.js'

export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS. */
  url: string
  /** Prefix of every key and channel, so several deployments share one Redis. Default `jobwire`. */
  prefix?: string
  retention?: Retention
  /** The byte budget of the job records a node keeps from its own commits (`--state-cache-bytes`; core/store.ts: defaultStateCacheBytes). */
  cacheBytes?: number
  /** A command unanswered this long fails with `unavailable` (default 3000 ms). */
  commandTimeoutMs?: number
  /** How often the node checks its pub/sub connection and which Redis it talks to (default 2000 ms). */
  probeIntervalMs?: number
  /** Called for things an operator should know: a dead subscription, Redis lost data. */
  onWarning?: (message: string, details?: Record<string, unknown>) => void
}

/**
 * The scale-out store: any number of nodes share one Redis. A facade over its parts, each in a
 * module of its own: the connections and Lua scripts (connection.ts, scripts.ts, lua/), the
 * commit path (commits.ts), pub/sub (notifications.ts), and which Redis this is: generations,
 * epochs and the liveness probe (epochs.ts). Key layout: keys.ts; see docs/scaling-redis.md.
 */
export class RedisStore implements Store {
  readonly kind = 'redis'
  readonly #connection: RedisConnection
  readonly #notifications: RedisNotifications
  readonly #epochs: RedisEpochs
  readonly #commits: RedisCommits
  // The commit path (commits.ts) and pub/sub (notifications.ts), as they are.
  readonly createJob: Store['createJob']
  readonly getJob: Store['getJob']
  readonly getRecord: Store['getRecord']
  readonly listJobs: Store['listJobs']
  readonly append: Store['append']
  readonly readLog: Store['readLog']
  readonly claim: Store['claim']
  readonly expiredLeases: Store['expiredLeases']
  readonly dueDeadlines: Store['dueDeadlines']
  readonly queuePosition: Store['queuePosition']
  readonly putValue: Store['putValue']
  readonly getValue: Store['getValue']
  readonly deleteValue: Store['deleteValue']
  readonly sweep: Store['sweep']
  readonly subscribe: Store['subscribe']
  readonly subscribeQueue: Store['subscribeQueue']
  readonly subscribeOwner: NonNullable<Store['subscribeOwner']>

  constructor(options: RedisStoreOptions) {
    const keys = new RedisKeys(options.prefix ?? configDefaults.redisPrefix)
    const node = randomBytes(6).toString('base64url')
    const commandTimeoutMs = options.commandTimeoutMs ?? 3000
    const onWarning = options.onWarning ?? (() => {})
    const connection = new RedisConnection({ url: options.url, commandTimeoutMs, name: `jobwire:${node}`, subscriberSuffix: 'sub', onWarning })
    connection.usableWhen(() => this.#epochs.ready)
    const notifications = new RedisNotifications({
      connection,
      keys,
      node,
      commandTimeoutMs,
      clientReady: () => this.#epochs.ready,
      onProbe: (token) => this.#epochs.heard(token),
    })
    this.#epochs = new RedisEpochs({
      connection,
      keys,
      notifications,
      node,
      probeIntervalMs: options.probeIntervalMs ?? 2000,
      onWarning,
      forget: () => this.#commits.forget(),
    })
    this.#commits = new RedisCommits({ connection, keys, retention: options.retention ?? defaultRetention, cacheBytes: options.cacheBytes, epochs: this.#epochs, notifications })
    this.#connection = connection
    this.#notifications = notifications
    const commits = this.#commits
    this.createJob = commits.createJob.bind(commits)
    this.getJob = commits.getJob.bind(commits)
    this.getRecord = commits.getRecord.bind(commits)
    this.listJobs = commits.listJobs.bind(commits)
    this.append = commits.append.bind(commits)
    this.readLog = commits.readLog.bind(commits)
    this.claim = commits.claim.bind(commits)
    this.expiredLeases = commits.expiredLeases.bind(commits)
    this.dueDeadlines = commits.dueDeadlines.bind(commits)
    this.queuePosition = commits.queuePosition.bind(commits)
    this.putValue = commits.putValue.bind(commits)
    this.getValue = commits.getValue.bind(commits)
    this.deleteValue = commits.deleteValue.bind(commits)
    this.sweep = commits.sweep.bind(commits)
    this.subscribe = notifications.subscribe.bind(notifications)
    this.subscribeQueue = notifications.subscribeQueue.bind(notifications)
    this.subscribeOwner = notifications.subscribeOwner.bind(notifications)
  }

  /** Resolves true once both connections are up (false after `timeoutMs`): a node starts serving after this. */
  async waitUntilReady(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.#connection.closed && !(this.#epochs.ready && this.#notifications.ready)) {
      const left = deadline - Date.now()
      if (left <= 0) return false
      await this.#connection.nextChange(left)
    }
    return !this.#connection.closed
  }

  async ping(): Promise<void> {
    this.#connection.usable()
    if (!this.#notifications.ready) throw new JobwireError('unavailable', { reason: 'the pub/sub connection to Redis is down' })
    await this.#connection.guard(() => this.#connection.client.ping())
  }

  /** Both connections up and this node's pub/sub probe coming back (no round trip: the `jobwire_redis_up` gauge). */
  get live(): boolean {
    return !this.#connection.closed && this.#epochs.ready && this.#notifications.ready && !this.#epochs.overdue
  }

  /** The job records this node keeps from its own commits (the `jobwire_state_cache_*` gauges). */
  get stateCache(): { jobs: number; bytes: number } {
    return this.#commits.stateCache
  }

  async close(): Promise<void> {
    if (this.#connection.closed) return
    this.#epochs.close()
    this.#connection.close()
  }
}

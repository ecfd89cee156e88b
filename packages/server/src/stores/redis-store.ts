import { createHash, randomBytes } from 'node:crypto'
import { Redis, type RedisOptions } from 'ioredis'
import { applyEvent, JobwireError, type JobEvent, type JobEventOf, type JobState, type JobStatus, type Owner } from '@jobwire/protocol'
import { applyPlan, createdEvent, decodeCursor, encodeCursor, expiryOf, initialTimers, isQueuedForDispatch, nextDeadline, noTimers } from '../core/apply.js'
import { FanOut } from '../core/fan-out.js'
import { defaultRetention } from '../options.js'
import { configDefaults } from '../config.js'
import {
  type AppendPlan,
  type AppendResult,
  type CreateResult,
  type EventListener,
  type JobPage,
  type JobQuery,
  type JobRecord,
  type JobTimers,
  type Lease,
  type LogRange,
  type NewJob,
  type OwnerListener,
  type Retention,
  type Store,
  type SweepResult,
  type Unsubscribe,
} from '../core/store.js'
import { RedisKeys } from './redis-keys.js'
import {
  commitScript,
  createScript,
  dueScript,
  generationScript,
  loadScript,
  pickScript,
  positionScript,
  readLogScript,
  sweepScript,
} from './redis-scripts.js'

export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS. */
  url: string
  /** Prefix of every key and channel, so several deployments share one Redis. Default `jobwire`. */
  prefix?: string
  retention?: Retention
  /** A command unanswered this long fails with `unavailable` (default 3000 ms). */
  commandTimeoutMs?: number
  /** How often the node checks its pub/sub connection and which Redis it talks to (default 2000 ms). */
  probeIntervalMs?: number
  /** Called for things an operator should know: a dead subscription, Redis lost data. */
  onWarning?: (message: string, details?: Record<string, unknown>) => void
}

/**
 * How far a job's seq jumps when its history may have been lost (its epoch changes): further
 * than any job gets in the window between Redis's last durable write and its failure.
 */
export const epochSeqGap = 1_000_000

interface Script {
  lua: string
  sha: string
}

function script(lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') }
}

const scripts = {
  load: script(loadScript),
  readLog: script(readLogScript),
  create: script(createScript),
  commit: script(commitScript),
  pick: script(pickScript),
  position: script(positionScript),
  sweep: script(sweepScript),
  due: script(dueScript),
  generation: script(generationScript),
}

/** A job as loaded for a compare-and-set: the state, and what the commit must find unchanged. */
interface Loaded {
  job: JobState
  lease: Lease | null
  ver: string
  inc: string
  ord: number
  avail: number
  timers: JobTimers
}

interface PendingAppend {
  plan: AppendPlan
  resolve: (result: AppendResult) => void
  reject: (error: unknown) => void
}

interface Channel {
  /** Bumped with every SUBSCRIBE sent, so only the newest reply confirms. */
  token: number
  confirmed: boolean
  pending: boolean
}

/**
 * Fail fast while Redis is away (no offline queue, no retries of a command whose connection
 * dropped: it may or may not have run, so the caller gets 503, never a late 2xx), and keep
 * reconnecting in the background so everything recovers by itself.
 */
export function failFastConnection(commandTimeoutMs: number): RedisOptions {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    autoResubscribe: false,
    commandTimeout: commandTimeoutMs,
    connectTimeout: Math.max(1000, commandTimeoutMs),
    retryStrategy: (times) => Math.min(100 * times, 1000),
  }
}

/** Redis errors that mean "not now" rather than "wrong". */
const transientReplies = /^(BUSY|LOADING|READONLY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|NOREPLICAS|OOM|NOSCRIPT)/

/**
 * What a failed Redis call means to callers: a script's own refusal (a ReplyError that is not
 * transient) passes through; connection trouble and transient replies become `unavailable` (503).
 */
export function redisFailure(error: unknown, closed: boolean): unknown {
  if (error instanceof JobwireError) return error
  if (error instanceof Error && error.name === 'ReplyError' && !transientReplies.test(error.message)) return error
  if (closed) return new JobwireError('unavailable', { reason: 'the store is closed' })
  return new JobwireError('unavailable', { reason: `Redis: ${error instanceof Error ? error.message : String(error)}` })
}

/**
 * The scale-out store: any number of nodes share one Redis. Nothing is cached between calls (other
 * nodes write too): an append loads the job, runs the plan here with the shared reducer, and
 * commits with a Lua script only if the job's version is unchanged, retrying otherwise. Appends
 * to one job from this node are grouped into one commit. Events reach every node over pub/sub,
 * and each node subscribes only to the jobs its own clients watch; a missed message is healed by
 * the subscription reading the log. See redis-keys.ts for the layout, docs/scaling-redis.md.
 */
export class RedisStore implements Store {
  readonly kind = 'redis'
  readonly #keys: RedisKeys
  readonly #retention: Retention
  readonly #client: Redis
  readonly #subscriber: Redis
  readonly #commandTimeoutMs: number
  readonly #onWarning: (message: string, details?: Record<string, unknown>) => void
  /** This node's name on the probe channel. */
  readonly #node = randomBytes(6).toString('base64url')
  readonly #fanOut = new FanOut({
    onFirst: (id) => this.#addChannel(this.#keys.jobChannel(id)),
    onLast: (id) => this.#dropChannel(this.#keys.jobChannel(id)),
    onFirstOwner: (owner) => this.#addChannel(this.#keys.ownerChannel(owner.tenant, owner.user)),
    onLastOwner: (owner) => this.#dropChannel(this.#keys.ownerChannel(owner.tenant, owner.user)),
  })
  /** Channels this node's listeners need, and whether Redis confirmed each. */
  readonly #channels = new Map<string, Channel>()
  readonly #watchedJobs = new Set<string>()
  readonly #queueListeners = new Map<string, number>()
  readonly #waiters = new Set<() => void>()
  readonly #appends = new Map<string, PendingAppend[]>()
  /**
   * Per job, the record as this node last committed it: the next write through this node starts
   * from it instead of reading the job again, and the commit's compare-and-set catches a write made
   * elsewhere (then it reloads). Oldest first, at most `#committedLimit`.
   */
  readonly #committed = new Map<string, Loaded>()
  readonly #committedLimit = 10_000
  #claims: Promise<unknown> = Promise.resolve()
  /** The Redis server's run_id, read on every (re)connect: null until known. */
  #runId: string | null = null
  /** The deployment's generation as last seen (see redis-scripts.ts): a change means Redis lost writes. */
  #generation: string | null = null
  #candidates = 0
  /** Watchers must re-read once both connections are up (after a reconnect or a generation change). */
  #resyncPending = false
  #clientReady = false
  #subscriberReady = false
  #closed = false
  readonly #ownerChannelStart: string
  readonly #probeTimer: NodeJS.Timeout
  readonly #probeTimeoutMs: number
  #probing = false
  #probeSent = 0
  #probeSentAt = 0
  #probeHeard = 0
  #lastWarning = ''

  constructor(options: RedisStoreOptions) {
    this.#keys = new RedisKeys(options.prefix ?? configDefaults.redisPrefix)
    this.#ownerChannelStart = `${this.#keys.prefix}:ch:owner:`
    this.#retention = options.retention ?? defaultRetention
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 3000
    this.#onWarning = options.onWarning ?? (() => {})
    const probeIntervalMs = options.probeIntervalMs ?? 2000
    this.#probeTimeoutMs = Math.max(1000, probeIntervalMs)
    const connection = failFastConnection(this.#commandTimeoutMs)
    // Commands issued in one turn (a bulk write's loads, then its commits) leave in one write.
    this.#client = new Redis(options.url, { ...connection, connectionName: `jobwire:${this.#node}`, enableAutoPipelining: true })
    this.#subscriber = new Redis(options.url, { ...connection, connectionName: `jobwire:${this.#node}:sub` })

    this.#client.on('error', (error: Error) => this.#warn('Redis connection error', { error: error.message }))
    this.#client.on('ready', () => void this.#clientConnected())
    this.#client.on('close', () => {
      this.#clientReady = false
    })
    this.#subscriber.on('error', (error: Error) => this.#warn('Redis pub/sub connection error', { error: error.message }))
    this.#subscriber.on('ready', () => void this.#subscriberConnected())
    this.#subscriber.on('close', () => {
      this.#subscriberReady = false
      for (const channel of this.#channels.values()) {
        channel.confirmed = false
        channel.pending = false
      }
    })
    this.#subscriber.on('message', (channel: string, message: string) => this.#onMessage(channel, message))
    this.#probeTimer = setInterval(() => void this.#probe(), probeIntervalMs)
    this.#probeTimer.unref()
  }

  /** Resolves true once both connections are up (false after `timeoutMs`): a node starts serving after this. */
  async waitUntilReady(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.#closed && !(this.#clientReady && this.#subscriberReady && this.#confirmed(this.#keys.probeChannel(this.#node)))) {
      const left = deadline - Date.now()
      if (left <= 0) return false
      await this.#nextChange(left)
    }
    return !this.#closed
  }

  async createJob(input: NewJob): Promise<CreateResult> {
    this.#usable()
    const k = this.#keys
    const ownerChannel = input.owner === null ? '' : k.ownerChannel(input.owner.tenant, input.owner.user)
    await this.#listeningTo([k.jobChannel(input.id), ...(ownerChannel === '' ? [] : [ownerChannel])])
    const event = createdEvent(input)
    const job = applyEvent(null, event)
    const key = input.idempotencyKey
    const owner = job.owner
    const timers = timerArgs(initialTimers(input.deadlines, input.dispatch, Date.parse(input.at)))
    const reply = (await this.#eval(
      scripts.create,
      [
        k.job(input.id),
        k.log(input.id),
        k.idempotency(key ?? ''),
        k.ordinal,
        k.jobs,
        k.status('queued'),
        k.type(job.type),
        k.tenant(owner?.tenant ?? ''),
        k.user(owner?.user ?? ''),
        k.queue(job.type),
        k.generation,
        k.deadlines,
      ],
      [
        input.id,
        JSON.stringify(job),
        JSON.stringify(event),
        this.#candidate(),
        epochSeqGap,
        key === null ? '0' : '1',
        key ?? '',
        job.type,
        owner?.tenant ?? '',
        owner?.user ?? '',
        job.dispatch ? '1' : '0',
        k.jobKeyStart,
        k.jobChannel(input.id),
        k.queueChannel(job.type),
        ownerChannel,
        owner === null ? '0' : '1',
        ...timers,
      ],
    )) as [number, ...(string | null)[]]
    if (reply[0] === 1) return { job, created: true }
    const existing = parseRecord(reply.slice(1) as (string | null)[])
    if (existing === null) throw new JobwireError('internal', { requestId: 'redis-create' })
    return { job: existing.job, created: false }
  }

  async getJob(id: string): Promise<JobState | null> {
    return (await this.#load(id))?.job ?? null
  }

  async getRecord(id: string): Promise<JobRecord | null> {
    const loaded = await this.#load(id)
    return loaded === null ? null : { job: loaded.job, lease: loaded.lease, timers: loaded.timers }
  }

  async listJobs(query: JobQuery): Promise<JobPage> {
    this.#usable()
    const k = this.#keys
    // Walk the most selective index newest first; the other filters are checked on each job.
    const index =
      query.user !== undefined
        ? k.user(query.user)
        : query.tenant !== undefined
          ? k.tenant(query.tenant)
          : query.type !== undefined
            ? k.type(query.type)
            : query.status !== undefined
              ? k.status(query.status)
              : k.jobs
    const filtered = [query.status, query.type, query.tenant, query.user].filter((v) => v !== undefined).length > 1
    const batchSize = filtered ? 200 : Math.min(query.limit + 1, 1000)
    /** Jobs looked at per call when filters are checked here: a page may come back short, with a cursor. */
    const scanLimit = Math.max(5000, query.limit * 10)
    const before = decodeCursor(query.cursor)
    let max = before === null ? '+inf' : `(${before}`
    const matches: { ord: number; job: JobState }[] = []
    let scanned = 0
    let lastOrd: number | null = null
    let exhausted = false
    try {
      while (matches.length <= query.limit) {
        if (scanned >= scanLimit) break
        const batch = await this.#client.zrevrangebyscore(index, max, '-inf', 'WITHSCORES', 'LIMIT', 0, batchSize)
        const ids: string[] = []
        const ords: number[] = []
        for (let i = 0; i + 1 < batch.length; i += 2) {
          ids.push(batch[i] as string)
          ords.push(Number(batch[i + 1]))
        }
        const records = await Promise.all(ids.map((id) => this.#client.hmget(k.job(id), 'state', 'seq', 'status')))
        for (let i = 0; i < ids.length && matches.length <= query.limit; i++) {
          scanned++
          lastOrd = ords[i] as number
          const [state, seq] = records[i] ?? []
          if (state === null || state === undefined) continue // swept meanwhile
          const job = withSeq(JSON.parse(state) as JobState, seq)
          if (query.status !== undefined && job.status !== query.status) continue
          if (query.type !== undefined && job.type !== query.type) continue
          if (query.tenant !== undefined && job.owner?.tenant !== query.tenant) continue
          if (query.user !== undefined && job.owner?.user !== query.user) continue
          matches.push({ ord: lastOrd, job })
        }
        if (ids.length < batchSize) {
          exhausted = true
          break
        }
        max = `(${lastOrd}`
      }
    } catch (error) {
      throw this.#translate(error)
    }
    const page = matches.slice(0, query.limit)
    const last = page.at(-1)
    let nextCursor: string | null = null
    if (matches.length > query.limit && last !== undefined) nextCursor = encodeCursor(last.ord)
    else if (!exhausted && matches.length <= query.limit && lastOrd !== null) nextCursor = encodeCursor(lastOrd)
    return { jobs: page.map((m) => m.job), nextCursor }
  }

  append(jobId: string, plan: AppendPlan): Promise<AppendResult> {
    return new Promise((resolve, reject) => {
      this.#usable()
      const entry = { plan, resolve, reject }
      const queue = this.#appends.get(jobId)
      if (queue !== undefined) {
        queue.push(entry)
        return
      }
      const fresh = [entry]
      this.#appends.set(jobId, fresh)
      void this.#drainAppends(jobId, fresh)
    })
  }

  async readLog(jobId: string, after: number, limit: number): Promise<LogRange | null> {
    this.#usable()
    await this.#listening(jobId)
    const reply = (await this.#eval(
      scripts.readLog,
      [this.#keys.job(jobId), this.#keys.log(jobId), this.#keys.generation],
      [this.#candidate(), epochSeqGap, after + 1, limit],
    )) as [string, string, number, string[]] | null
    if (reply === null) return null
    const [head, status, firstSeq, events] = reply
    return { events: events.map((body) => JSON.parse(body) as JobEvent), firstSeq: Number(firstSeq), head: Number(head), status: status as JobStatus }
  }

  async claim(types: readonly string[], now: number, plan: AppendPlan): Promise<AppendResult | null> {
    this.#usable()
    if (types.length === 0) return null
    await this.#listeningTo(types.map((type) => this.#keys.queueChannel(type)))
    // One claim at a time from this node: its claimers would only race each other for the same
    // oldest job. Across nodes the compare-and-set decides.
    const run = this.#claims.then(() => this.#claimNow(types, now, plan))
    this.#claims = run.catch(() => undefined)
    return run
  }

  async expiredLeases(now: number, limit: number): Promise<string[]> {
    this.#usable()
    return this.#guard(() => this.#client.zrangebyscore(this.#keys.leases, '-inf', `(${now}`, 'LIMIT', 0, limit))
  }

  async dueDeadlines(now: number, limit: number): Promise<string[]> {
    this.#usable()
    return (await this.#eval(scripts.due, [this.#keys.deadlines], [now, limit, this.#keys.jobKeyStart])) as string[]
  }

  async queuePosition(jobId: string): Promise<number | null> {
    this.#usable()
    const reply = (await this.#eval(scripts.position, [this.#keys.job(jobId)], [this.#keys.prefix, jobId])) as number | null
    return reply === null ? null : Number(reply)
  }

  subscribe(jobId: string, listener: EventListener): Unsubscribe {
    if (this.#closed) return () => {}
    return this.#fanOut.subscribe(jobId, listener)
  }

  subscribeQueue(type: string, listener: () => void): Unsubscribe {
    if (this.#closed) return () => {}
    const count = this.#queueListeners.get(type) ?? 0
    this.#queueListeners.set(type, count + 1)
    if (count === 0) this.#addChannel(this.#keys.queueChannel(type))
    const unsubscribe = this.#fanOut.subscribeQueue(type, listener)
    let done = false
    return () => {
      if (done) return
      done = true
      unsubscribe()
      const left = (this.#queueListeners.get(type) ?? 1) - 1
      if (left > 0) {
        this.#queueListeners.set(type, left)
        return
      }
      this.#queueListeners.delete(type)
      this.#dropChannel(this.#keys.queueChannel(type))
    }
  }

  subscribeOwner(owner: Owner, listener: OwnerListener): Unsubscribe {
    if (this.#closed) return () => {}
    return this.#fanOut.subscribeOwner(owner, listener)
  }

  async putValue(jobId: string, ref: string, json: string): Promise<void> {
    this.#usable()
    await this.#guard(() => this.#client.hset(this.#keys.values(jobId), ref, json))
  }

  async getValue(jobId: string, ref: string): Promise<string | null> {
    this.#usable()
    return this.#guard(() => this.#client.hget(this.#keys.values(jobId), ref))
  }

  async deleteValue(jobId: string, ref: string): Promise<void> {
    this.#usable()
    await this.#guard(() => this.#client.hdel(this.#keys.values(jobId), ref))
  }

  async sweep(now: number): Promise<SweepResult> {
    this.#usable()
    const k = this.#keys
    let expiredJobs = 0
    for (let round = 0; round < 100; round++) {
      const ids = await this.#guard(() => this.#client.zrangebyscore(k.expiry, '-inf', now, 'LIMIT', 0, 200))
      if (ids.length === 0) break
      const deleted = await Promise.all(
        ids.map((id) => this.#eval(scripts.sweep, [k.job(id), k.log(id), k.expiry, k.jobs, k.leases, k.deadlines, k.values(id)], [id, now, k.prefix])),
      )
      expiredJobs += deleted.filter((reply) => reply === 1).length
      if (ids.length < 200) break
    }
    return { expiredJobs }
  }

  async ping(): Promise<void> {
    this.#usable()
    if (!this.#subscriberReady || !this.#confirmed(this.#keys.probeChannel(this.#node))) throw new JobwireError('unavailable', { reason: 'the pub/sub connection to Redis is down' })
    await this.#guard(() => this.#client.ping())
  }

  /** Both connections up and this node's pub/sub probe coming back (no round trip: the `jobwire_redis_up` gauge). */
  get live(): boolean {
    const overdue = this.#probeSent > this.#probeHeard && Date.now() - this.#probeSentAt > this.#probeTimeoutMs
    return !this.#closed && this.#clientReady && this.#subscriberReady && this.#confirmed(this.#keys.probeChannel(this.#node)) && !overdue
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#probeTimer)
    this.#wake()
    this.#client.disconnect()
    this.#subscriber.disconnect()
  }

  // --- appends -------------------------------------------------------------------------------

  async #drainAppends(jobId: string, queue: PendingAppend[]): Promise<void> {
    while (queue.length > 0) await this.#commitGroup(jobId, queue.splice(0, 500))
    this.#appends.delete(jobId)
  }

  /**
   * Runs a group of plans one after the other against the job's current state and commits all
   * their events at once, as if they had been appended in turn. A conflict with another node
   * reruns the whole group on the newer state. Each caller gets the state after its own plan.
   */
  async #commitGroup(jobId: string, group: PendingAppend[]): Promise<void> {
    try {
      for (let attempt = 0; ; attempt++) {
        const kept = attempt === 0 ? this.#committed.get(jobId) : undefined
        if (kept !== undefined) await this.#listening(jobId)
        const loaded = kept ?? (await this.#load(jobId))
        if (loaded === null) {
          for (const item of group) item.reject(new JobwireError('job_not_found', { jobId }))
          return
        }
        const at = new Date().toISOString()
        let { job, lease, timers } = loaded
        let avail = loaded.avail
        let changed = false
        const events: JobEvent[] = []
        const outcomes: ({ ok: true; result: AppendResult } | { ok: false; error: unknown })[] = []
        for (const item of group) {
          try {
            const applied = applyPlan(job, lease, item.plan, at, timers)
            if (applied.events.length > 0 || applied.leaseChanged || applied.timersChanged) {
              changed = true
              job = applied.job
              lease = applied.lease
              timers = applied.timers
              if (applied.availableAt !== undefined) avail = applied.availableAt
              events.push(...applied.events)
            }
            outcomes.push({ ok: true, result: { job: applied.job, events: applied.events, lease: applied.lease } })
          } catch (error) {
            outcomes.push({ ok: false, error })
          }
        }
        if (!changed || (await this.#commit(loaded, job, lease, avail, events, timers))) {
          outcomes.forEach((outcome, i) => {
            const item = group[i] as PendingAppend
            if (outcome.ok) item.resolve(outcome.result)
            else item.reject(outcome.error)
          })
          return
        }
        await this.#backOff(attempt)
      }
    } catch (error) {
      const failure = this.#translate(error)
      for (const item of group) item.reject(failure)
    }
  }

  async #claimNow(types: readonly string[], now: number, plan: AppendPlan): Promise<AppendResult | null> {
    const k = this.#keys
    const keys = types.flatMap((type) => [k.queue(type), k.delayed(type)])
    for (let attempt = 0; ; attempt++) {
      const reply = (await this.#eval(scripts.pick, keys, [now, k.jobKeyStart, this.#candidate(), epochSeqGap, k.generation])) as
        | [string, ...(string | null)[]]
        | null
      if (reply === null) return null
      const loaded = parseRecord(reply.slice(1) as (string | null)[])
      if (loaded !== null && isQueuedForDispatch(loaded.job)) {
        await this.#listening(loaded.job.id)
        const applied = applyPlan(loaded.job, loaded.lease, plan, new Date(now).toISOString(), loaded.timers)
        const result = { job: applied.job, events: applied.events, lease: applied.lease }
        if (applied.events.length === 0 && !applied.leaseChanged && !applied.timersChanged) return result
        if (await this.#commit(loaded, applied.job, applied.lease, applied.availableAt ?? loaded.avail, applied.events, applied.timers)) return result
      }
      await this.#backOff(attempt)
    }
  }

  /** Commits `job` computed from `before`; false when another writer got there first. */
  async #commit(before: Loaded, job: JobState, lease: Lease | null, avail: number, events: readonly JobEvent[], timers: JobTimers): Promise<boolean> {
    const k = this.#keys
    const id = job.id
    // Forgotten until this commit is known to have landed: a write that fails or times out may or may not have.
    this.#committed.delete(id)
    const expiresAt = expiryOf(job, this.#retention, timers)
    const bodies = events.map((event) => JSON.stringify(event))
    const ver = String(1 + Math.floor(Math.random() * 2 ** 52))
    const reply = await this.#eval(
      scripts.commit,
      [
        k.job(id),
        k.log(id),
        k.status(before.job.status),
        k.status(job.status),
        k.queue(job.type),
        k.delayed(job.type),
        k.leases,
        k.expiry,
        k.generation,
        k.deadlines,
      ],
      [
        before.ver,
        before.inc,
        JSON.stringify(job),
        job.seq,
        job.status,
        lease === null ? '' : JSON.stringify(lease),
        lease === null || lease.ended === true ? '' : lease.expiresAt,
        avail,
        isQueuedForDispatch(job) ? '1' : '0',
        isQueuedForDispatch(before.job) ? '1' : '0',
        before.ord,
        id,
        expiresAt === null ? '' : expiresAt,
        job.seq - this.#retention.maxEventsPerJob + 1,
        k.jobChannel(id),
        k.queueChannel(job.type),
        `[${bodies.join(',')}]`,
        events.length,
        ver,
        ...timerArgs(timers),
        ...events.flatMap((event, i) => [event.seq, bodies[i] as string]),
      ],
    )
    if (reply !== 1) return false
    this.#committed.set(id, { job, lease, ver, inc: before.inc, ord: before.ord, avail, timers })
    if (this.#committed.size > this.#committedLimit) this.#committed.delete(this.#committed.keys().next().value as string)
    return true
  }

  /** Waits a little after a lost compare-and-set, more as conflicts repeat; gives up after 100. */
  async #backOff(attempt: number): Promise<void> {
    if (attempt >= 100) throw new JobwireError('unavailable', { reason: 'too many concurrent writers on one job' })
    if (attempt < 2) return
    await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, 2 ** attempt)))
  }

  async #load(id: string): Promise<Loaded | null> {
    this.#usable()
    await this.#listening(id)
    const reply = (await this.#eval(scripts.load, [this.#keys.job(id), this.#keys.generation], [this.#candidate(), epochSeqGap])) as
      | (string | null)[]
      | null
    return reply === null ? null : parseRecord(reply)
  }

  // --- connections, subscriptions, liveness --------------------------------------------------

  async #eval(which: Script, keys: string[], args: (string | number)[]): Promise<unknown> {
    return this.#guard(async () => {
      try {
        return await this.#client.evalsha(which.sha, keys.length, ...keys, ...args)
      } catch (error) {
        if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
        return this.#client.eval(which.lua, keys.length, ...keys, ...args)
      }
    })
  }

  /** Runs a Redis call, turning connection trouble into `unavailable` (HTTP 503). */
  async #guard<T>(call: () => Promise<T>): Promise<T> {
    this.#usable()
    try {
      return await call()
    } catch (error) {
      throw this.#translate(error)
    }
  }

  #translate(error: unknown): unknown {
    return redisFailure(error, this.#closed)
  }

  #usable(): void {
    if (this.#closed) throw new JobwireError('unavailable', { reason: 'the store is closed' })
    if (!this.#clientReady || this.#runId === null) throw new JobwireError('unavailable', { reason: 'Redis is unreachable' })
  }

  /** The generation a script starts if it finds none (Redis lost our keys since the last probe). */
  #candidate(): string {
    if (this.#runId === null) throw new JobwireError('unavailable', { reason: 'Redis is unreachable' })
    return `${this.#runId}/${this.#node}.${++this.#candidates}`
  }

  async #clientConnected(): Promise<void> {
    try {
      await this.#refreshGeneration()
      if (this.#client.status !== 'ready' || this.#closed) return
      this.#clientReady = true
      this.#lastWarning = '' // the next outage is reported again
      this.#wake()
      this.#resyncWhenReady()
    } catch (error) {
      // The probe tries again.
      this.#warn('could not identify the Redis server', { error: (error as Error).message })
    }
  }

  /**
   * Reads which Redis this is (`run_id` changes on every restart and differs after a failover)
   * and the deployment's generation, starting a new one if Redis restarted or lost it. A change
   * means Redis may have lost writes: jobs touched from now on start a new epoch (the scripts see
   * the new generation), and every local watcher re-reads.
   */
  async #refreshGeneration(): Promise<void> {
    const info = await this.#client.info('server')
    const runId = /run_id:(\w+)/.exec(info)?.[1] ?? 'unknown'
    const token = randomBytes(9).toString('base64url')
    const generation = String(
      await this.#client.evalsha(scripts.generation.sha, 1, this.#keys.generation, runId, token).catch((error: Error) => {
        if (!error.message.startsWith('NOSCRIPT')) throw error
        return this.#client.eval(scripts.generation.lua, 1, this.#keys.generation, runId, token)
      }),
    )
    this.#runId = runId
    const previous = this.#generation
    this.#generation = generation
    // Whatever Redis held before this connection, it may hold no longer: the next writes read first.
    this.#committed.clear()
    if (previous !== null && previous !== generation) {
      this.#onWarning('Redis restarted, failed over or lost our keys: jobs that survived start a new epoch, watchers re-read', {
        previous,
        current: generation,
      })
      this.#resyncPending = true
      this.#resyncWhenReady()
    }
  }

  /**
   * Has every local watcher re-read the log from its own position, and every waiting claimer
   * look again, once both connections work (a re-read while commands still fail would only
   * end the watchers with `unavailable`).
   */
  #resyncWhenReady(): void {
    if (!this.#resyncPending || !this.#clientReady || !this.#subscriberReady || this.#closed) return
    this.#resyncPending = false
    for (const jobId of this.#watchedJobs) this.#fanOut.resync(jobId)
    for (const type of this.#queueListeners.keys()) this.#fanOut.publishQueue(type)
  }

  async #subscriberConnected(): Promise<void> {
    if (this.#closed) return
    this.#subscriberReady = true
    const probeChannel = this.#keys.probeChannel(this.#node)
    if (!this.#channels.has(probeChannel)) this.#channels.set(probeChannel, { token: 0, confirmed: false, pending: false })
    const all = [...this.#channels.keys()]
    await Promise.all(all.map((channel) => this.#subscribeChannel(channel)))
    if (!this.#subscriberReady) return
    // Whatever was published while this connection was down or being set up is lost.
    this.#resyncPending = true
    this.#resyncWhenReady()
  }

  #addChannel(channel: string): void {
    if (this.#channels.has(channel)) return
    this.#channels.set(channel, { token: 0, confirmed: false, pending: false })
    const jobId = this.#jobOfChannel(channel)
    if (jobId !== null) this.#watchedJobs.add(jobId)
    void this.#subscribeChannel(channel)
  }

  #dropChannel(channel: string): void {
    if (!this.#channels.delete(channel)) return
    const jobId = this.#jobOfChannel(channel)
    if (jobId !== null) this.#watchedJobs.delete(jobId)
    if (this.#subscriberReady && !this.#closed) this.#subscriber.unsubscribe(channel).catch(() => undefined)
  }

  async #subscribeChannel(channel: string): Promise<void> {
    const entry = this.#channels.get(channel)
    if (entry === undefined || !this.#subscriberReady || this.#closed) return
    const token = ++entry.token
    entry.confirmed = false
    entry.pending = true
    try {
      await this.#subscriber.subscribe(channel)
      if (this.#channels.get(channel) === entry && entry.token === token && this.#subscriberReady) {
        entry.confirmed = true
        this.#wake()
      }
    } catch {
      // Left unconfirmed: the probe subscribes it again, or forces a reconnect.
    } finally {
      if (entry.token === token) entry.pending = false
    }
  }

  #jobOfChannel(channel: string): string | null {
    const start = this.#keys.jobChannel('')
    return channel.startsWith(start) ? channel.slice(start.length) : null
  }

  #confirmed(channel: string): boolean {
    return this.#channels.get(channel)?.confirmed === true
  }

  /** Before reading or writing a job someone here watches: Redis must have confirmed the watch. */
  #listening(jobId: string): Promise<void> {
    const channel = this.#channels.get(this.#keys.jobChannel(jobId))
    if (channel === undefined || channel.confirmed) return Promise.resolve()
    return this.#listeningTo([this.#keys.jobChannel(jobId)])
  }

  /**
   * Listen first, then look: a subscription is only safe once Redis has confirmed it, else an
   * event committed between our read and the SUBSCRIBE would be missed. Waits for that.
   */
  async #listeningTo(channels: readonly string[]): Promise<void> {
    const deadline = Date.now() + this.#commandTimeoutMs
    for (;;) {
      if (this.#closed) throw new JobwireError('unavailable', { reason: 'the store is closed' })
      if (channels.every((channel) => !this.#channels.has(channel) || this.#confirmed(channel))) return
      const left = deadline - Date.now()
      if (left <= 0) throw new JobwireError('unavailable', { reason: 'the pub/sub connection to Redis is not subscribed' })
      await this.#nextChange(left)
    }
  }

  #nextChange(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.#waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, timeoutMs)
      this.#waiters.add(done)
    })
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter()
  }

  #onMessage(channel: string, message: string): void {
    const jobId = this.#jobOfChannel(channel)
    if (jobId !== null) {
      let events: JobEvent[]
      try {
        events = JSON.parse(message) as JobEvent[]
      } catch {
        return
      }
      this.#fanOut.publish(jobId, events)
      return
    }
    const queueStart = this.#keys.queueChannel('')
    if (channel.startsWith(queueStart)) {
      this.#fanOut.publishQueue(channel.slice(queueStart.length))
      return
    }
    if (channel.startsWith(this.#ownerChannelStart)) {
      try {
        this.#fanOut.publishCreated(JSON.parse(message) as JobEventOf<'created'>)
      } catch {
        // not ours
      }
      return
    }
    if (channel === this.#keys.probeChannel(this.#node)) this.#probeHeard = Math.max(this.#probeHeard, Number(message))
  }

  /**
   * Every probe interval: a probe published last time that never came back means the pub/sub
   * connection is dead though its socket looks open, so it is dropped and made again (which
   * resubscribes and has every watcher re-read). Also re-reads which Redis this is.
   */
  async #probe(): Promise<void> {
    if (this.#closed || this.#probing) return
    this.#probing = true
    try {
      if (this.#subscriberReady && this.#probeSent > this.#probeHeard && Date.now() - this.#probeSentAt > this.#probeTimeoutMs) {
        this.#onWarning('the Redis pub/sub connection stopped delivering; reconnecting it', { node: this.#node })
        this.#probeHeard = this.#probeSent
        this.#subscriber.disconnect(true)
      }
      if (this.#client.status !== 'ready') return
      await this.#refreshGeneration()
      if (!this.#clientReady && this.#client.status === 'ready') {
        this.#clientReady = true
        this.#wake()
      }
      this.#resyncWhenReady()
      for (const [channel, entry] of this.#channels) if (!entry.confirmed && !entry.pending) void this.#subscribeChannel(channel)
      const probeChannel = this.#keys.probeChannel(this.#node)
      if (this.#subscriberReady && this.#confirmed(probeChannel) && this.#probeSent <= this.#probeHeard) {
        const token = this.#probeSent + 1
        const receivers = await this.#client.publish(probeChannel, String(token))
        this.#probeSent = token
        this.#probeSentAt = Date.now()
        if (receivers === 0) {
          // Redis has no subscriber on our channel: the subscription was lost without a word.
          this.#onWarning('Redis dropped this node\'s subscriptions; reconnecting the pub/sub connection', { node: this.#node })
          this.#probeHeard = this.#probeSent
          this.#subscriber.disconnect(true)
        }
      }
    } catch (error) {
      // A command connection that stopped answering may be dead without knowing: make it anew.
      if (error instanceof Error && /timed out/i.test(error.message)) this.#client.disconnect(true)
    } finally {
      this.#probing = false
    }
  }

  /** Reports a connection problem once until it changes, not on every reconnect attempt. */
  #warn(message: string, details: Record<string, unknown>): void {
    const text = `${message} ${JSON.stringify(details)}`
    if (text === this.#lastWarning || this.#closed) return
    this.#lastWarning = text
    this.#onWarning(message, details)
  }
}

/** Record fields in the scripts' order: state, seq, ver, lease, avail, inc, ord, status. */
function parseRecord(fields: readonly (string | null | undefined)[]): Loaded | null {
  const [state, seq, ver, lease, avail, inc, ord, , timers] = fields
  if (state === null || state === undefined) return null
  return {
    timers: timers === null || timers === undefined ? noTimers : (JSON.parse(timers) as JobTimers),
    job: withSeq(JSON.parse(state) as JobState, seq),
    lease: lease === null || lease === undefined ? null : (JSON.parse(lease) as Lease),
    ver: ver ?? '0',
    inc: inc ?? '',
    ord: Number(ord),
    avail: Number(avail ?? 0),
  }
}

/** A job's timers as script arguments: their JSON and the earliest deadline ('' for none). */
function timerArgs(timers: JobTimers): [string, string | number] {
  if (Object.keys(timers.settings).length === 0) return ['', '']
  return [JSON.stringify(timers), nextDeadline(timers) ?? '']
}

/** The hash's seq is the head; it is ahead of the stored state only after an epoch change. */
function withSeq(job: JobState, seq: string | null | undefined): JobState {
  const head = Number(seq)
  return seq === null || seq === undefined || head === job.seq ? job : { ...job, seq: head }
}

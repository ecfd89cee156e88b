import { applyEvent, isTerminal, JobwireError, type JobEvent, type JobState, type JobStatus } from '@jobwire/protocol'
import { applyPlan, createdEvent, decodeCursor, encodeCursor, expiryOf, initialTimers, isQueuedForDispatch, nextDeadline, noTimers } from '../../core/apply.js'
import type {
  AppendPlan,
  AppendResult,
  CreateResult,
  JobPage,
  JobQuery,
  JobRecord,
  JobTimers,
  Lease,
  LogRange,
  NewJob,
  Retention,
  SweepResult,
} from '../../core/store.js'
import { changedItemPlaces, defaultStateCacheBytes, inputKeptApart, stateWeights, storedStateJson, withInputKeptApart, type ListedJob } from '../../core/store.js'
import type { ChainableCommander } from 'ioredis'
import { RecentMap } from '../../core/recent-map.js'
import { SharedRun } from '../../core/shared-run.js'
import type { RedisConnection } from './connection.js'
import { epochSeqGap, type RedisEpochs } from './epochs.js'
import type { RedisKeys } from './keys.js'
import type { RedisNotifications } from './notifications.js'

/** A job as loaded for a compare-and-set: the state, and what the commit must find unchanged. */
interface Loaded {
  job: JobState
  /** Whether the stored state still carries the text (written before the text had a key of its own). */
  textInState: boolean
  /** Whether the stored state still carries the items (written before they had a key of their own). */
  itemsInState: boolean
  /** The JSON length of an input kept in its own key (core.inputKeptApart), left out of the state by commits; 0 when the state holds it. */
  inputBytes: number
  /** What its items weigh (core.itemsWeight), kept for the next commit that leaves them as they are. */
  itemsBytes: number
  /** About what this record holds in memory (core.stateWeight): what #committed's byte budget counts. */
  bytes: number
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

/** A commit waiting to leave with the others of its pass of the event loop. */
interface PendingCommit {
  /** lua/lib/commit.lua's fields for this job, joined at each `fieldSeparator`. */
  fields: string
  /** The text the commit appends or sets ('' for none): apart, since it may hold any character. */
  text: string
  /** Runs once the commit landed, before the caller hears of it. */
  landed: () => void
  resolve: (landed: boolean) => void
  reject: (error: unknown) => void
}

/** A create waiting to leave with the others of its pass of the event loop (lua/create.lua's arguments for it). */
interface PendingCreate {
  args: string[]
  resolve: (reply: (string | number | null)[]) => void
  reject: (error: unknown) => void
}

/** How many claims' worth of jobs beyond its own a claim's pick reads, for the next claims from this node. */
const spareClaims = 3
/**
 * At most this many spare jobs per set of types. Spares are read in whole claims (they serve only a
 * claim they cover): a claim of many jobs reads fewer claims' worth, one of more than this none.
 */
const maxSpares = 100
/** Sets of job types with spare jobs kept at once. */
const maxSpareSets = 64
/**
 * How many jobs' last committed records a node keeps at least (#committed): as many as the jobs'
 * facts (core/jobs.ts). Past it, a write reads its job first: in process a progress event to each of
 * 20,000 live jobs in turn cost 112–149 µs when a node kept 10,000, 77–86 now.
 */
const committedKept = 50_000
/** How long those spare jobs are used (ms): a job that became ready meanwhile waits at most this long for a pick. */
const spareMs = 50

/** lua/lib/commit.lua's argument for a lease, expiry or timers the same as the version it compares holds. */
const unchanged = '='

/**
 * What separates a commit's fields in the one string lua/lib/commit.lua splits: a byte none of them
 * holds (ids, types and statuses are checked where they enter; JSON escapes control characters).
 */
const fieldSeparator = '\x1f'

/** Most commits one script call carries (a long script holds up every other Redis client). */
const commitsPerCall = 64

export interface RedisCommitsOptions {
  connection: RedisConnection
  keys: RedisKeys
  retention: Retention
  /** The byte budget of #committed (core/store.ts: defaultStateCacheBytes). */
  cacheBytes?: number | undefined
  epochs: RedisEpochs
  notifications: RedisNotifications
}

/**
 * The commit path: jobs read and written. Nothing is cached between calls but what this node
 * committed itself (other nodes write too): an append loads the job, runs the plan here with the
 * shared reducer, and commits with lua/commit.lua only if the job's version is unchanged, retrying
 * otherwise. Appends to one job from this node are grouped into one commit. Every read or write of
 * a job someone here watches waits until Redis confirmed the watch (notifications.ts).
 */
export class RedisCommits {
  readonly #connection: RedisConnection
  readonly #keys: RedisKeys
  readonly #retention: Retention
  readonly #epochs: RedisEpochs
  readonly #notifications: RedisNotifications
  readonly #appends = new Map<string, PendingAppend[]>()
  /**
   * Per job, the record as this node last committed it: the next write through this node starts
   * from it instead of reading the job again, and the commit's compare-and-set catches a write made
   * elsewhere (then it reloads). At least the last `committedKept` committed (or those weighing the
   * byte budget, if fewer), at most twice as many.
   */
  readonly #committed: RecentMap<string, Loaded>
  /** Per job being read, its read running now and the one after it that the calls made meanwhile share (#sharedRead). */
  readonly #reads = new Map<string, SharedRun<Loaded | null>>()
  #claims: Promise<unknown> = Promise.resolve()
  /** Per set of job types, jobs the last pick read beyond its claim (and that claim's time), for the next claims (#claimNow). */
  readonly #spares = new Map<string, { records: Loaded[]; at: number }>()
  /**
   * Commits issued in this pass of the event loop, sent together after it (#sendBatch): every
   * request read from the sockets in one poll. Sent at the end of each request's own turn, a busy
   * node made a script call, and a write to the socket that wakes Redis, per request: 19 % of its
   * busy time in the users' shape, where those writes (`writeUtf8String`) were its largest cost.
   */
  #batch: PendingCommit[] = []
  /** Creates issued in this pass of the event loop, sent together after it (#sendCreates), as commits are. */
  #creates: PendingCreate[] = []

  constructor(options: RedisCommitsOptions) {
    this.#connection = options.connection
    this.#keys = options.keys
    this.#retention = options.retention
    this.#committed = new RecentMap(committedKept, { bytes: options.cacheBytes ?? defaultStateCacheBytes, weigh: (record) => record.bytes })
    this.#epochs = options.epochs
    this.#notifications = options.notifications
  }

  /** The records kept from this node's commits (#committed): how many, and what they weigh (core.stateWeight). */
  get stateCache(): { jobs: number; bytes: number } {
    return { jobs: this.#committed.size, bytes: this.#committed.bytes }
  }

  /** Forgets what this node committed: the next write of each job reads it first. */
  forget(): void {
    this.#committed.clear()
    this.#spares.clear()
  }

  async createJob(input: NewJob): Promise<CreateResult> {
    this.#connection.usable()
    // Every commit sends the id and type among fields split at this byte (#commit). The HTTP API
    // admits neither with it; a type given to JobService in code is checked here.
    for (const [field, value] of [['type', input.type], ['id', input.id]] as const) {
      if (value.includes(fieldSeparator)) throw new JobwireError('invalid_request', { field, reason: `${field}: must not hold the control character U+001F` })
    }
    const k = this.#keys
    const ownerChannel = input.owner === null ? '' : k.ownerChannel(input.owner.tenant, input.owner.user)
    // Listen first: a queue listener of this type on this node (subscribed, not yet confirmed by
    // Redis) must hear this job enter its queue, as it would on the in-process stores.
    await this.#notifications.listeningTo([k.jobChannel(input.id), k.queueChannel(input.type), ...(ownerChannel === '' ? [] : [ownerChannel])])
    const event = createdEvent(input)
    const job = applyEvent(null, event)
    const key = input.idempotencyKey
    const owner = job.owner
    const timers = timerArgs(initialTimers(input.deadlines, input.dispatch, Date.parse(input.at)))
    const inputJson = inputKeptApart(job.input)
    const reply = await new Promise<(string | number | null)[]>((resolve, reject) => {
      if (this.#creates.length === 0) setImmediate(() => this.#sendCreates())
      this.#creates.push({
        // lua/create.lua's arguments for one job, in its order.
        args: [
          k.job(input.id),
          k.log(input.id),
          key === null ? '' : k.idempotency(key),
          k.type(job.type),
          k.tenant(owner?.tenant ?? ''),
          k.user(owner?.user ?? ''),
          k.queue(job.type),
          k.input(input.id),
          input.id,
          storedStateJson(job, inputJson !== null),
          JSON.stringify(event),
          key ?? '',
          job.type,
          owner?.tenant ?? '',
          owner?.user ?? '',
          job.dispatch ? '1' : '0',
          k.jobChannel(input.id),
          k.queueChannel(job.type),
          ownerChannel,
          owner === null ? '0' : '1',
          timers[0],
          String(timers[1]),
          inputJson ?? '',
        ],
        resolve,
        reject,
      })
    })
    if (reply[0] === 1) return { job, created: true }
    if (reply[0] === 2) throw new JobwireError('internal', { requestId: 'redis-create', reason: `a job with id ${input.id} exists` })
    const existing = parseRecord(reply.slice(1) as (string | null)[])
    if (existing === null) throw new JobwireError('internal', { requestId: 'redis-create' })
    return { job: existing.job, created: false }
  }

  async getJob(id: string): Promise<JobState | null> {
    return (await this.#sharedRead(id))?.job ?? null
  }

  /**
   * A read of `id` shared by the calls made while another is running: they wait for it and share
   * the one read that starts when it ends, so each still sees every write acknowledged before its
   * call began (core/shared-run.ts, as the SQLite store's fsync is shared). Many watchers joining one
   * job at once each read its whole state (text and items) from Redis: 500 joining a job of 1.5 M
   * characters sent 750 MB through the node's connection, and the commands queued behind it — other
   * jobs' writes included — timed out (`unavailable`). Now two reads, and one state object whose JSON
   * the streams share (transports/state-json.ts).
   */
  #sharedRead(id: string): Promise<Loaded | null> {
    let reads = this.#reads.get(id)
    if (reads === undefined) {
      const own: SharedRun<Loaded | null> = new SharedRun(
        () => this.#load(id),
        () => {
          if (this.#reads.get(id) === own) this.#reads.delete(id)
        },
      )
      reads = own
      this.#reads.set(id, reads)
    }
    return reads.run()
  }

  async getRecord(id: string): Promise<JobRecord | null> {
    const loaded = await this.#load(id)
    return loaded === null ? null : { job: loaded.job, lease: loaded.lease, timers: loaded.timers }
  }

  async listJobs(query: JobQuery): Promise<JobPage> {
    this.#connection.usable()
    const k = this.#keys
    const client = this.#connection.client
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
    const matches: { ord: number; job: ListedJob }[] = []
    let scanned = 0
    let lastOrd: number | null = null
    let exhausted = false
    try {
      while (matches.length <= query.limit) {
        if (scanned >= scanLimit) break
        const batch = await client.zrevrangebyscore(index, max, '-inf', 'WITHSCORES', 'LIMIT', 0, batchSize)
        const ids: string[] = []
        const ords: number[] = []
        for (let i = 0; i + 1 < batch.length; i += 2) {
          ids.push(batch[i] as string)
          ords.push(Number(batch[i + 1]))
        }
        // One explicit pipeline, written to the socket at once: each job's fields and items. Not its
        // text (a list shows its length, kept beside the state) nor an input kept apart.
        const reads = client.pipeline()
        for (const id of ids) reads.hmget(k.job(id), 'state', 'seq', 'tlen').hgetall(k.items(id))
        const replies = await pipelined(reads)
        // Jobs last written before the text's length was kept: their text is read, in one more pipeline.
        const uncounted: ListedJob[] = []
        for (let i = 0; i < ids.length && matches.length <= query.limit; i++) {
          scanned++
          lastOrd = ords[i] as number
          const [state, seq, tlen] = (replies[2 * i] as (string | null)[] | null) ?? []
          if (state === null || state === undefined) continue // swept meanwhile
          const { text, input: _input, ...rest } = withItems(withSeq(JSON.parse(state) as JobState, seq), Object.entries(replies[2 * i + 1] as Record<string, string>).flat())
          const job: ListedJob = { ...rest, textLength: tlen === null || tlen === undefined ? text.length : Number(tlen) }
          if (query.status !== undefined && job.status !== query.status) continue
          if (query.type !== undefined && job.type !== query.type) continue
          if (query.tenant !== undefined && job.owner?.tenant !== query.tenant) continue
          if (query.user !== undefined && job.owner?.user !== query.user) continue
          if ((tlen === null || tlen === undefined) && text === '') uncounted.push(job)
          matches.push({ ord: lastOrd, job })
        }
        if (uncounted.length > 0) {
          const texts = client.pipeline()
          for (const job of uncounted) texts.get(k.text(job.id))
          const read = await pipelined(texts)
          uncounted.forEach((job, i) => (job.textLength = ((read[i] as string | null) ?? '').length))
        }
        if (ids.length < batchSize) {
          exhausted = true
          break
        }
        max = `(${lastOrd}`
      }
    } catch (error) {
      throw this.#connection.translate(error)
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
      this.#connection.usable()
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
    this.#connection.usable()
    await this.#notifications.listening(jobId)
    const reply = (await this.#connection.run(
      'readLog',
      [this.#keys.job(jobId), this.#keys.log(jobId), this.#keys.generation],
      [this.#epochs.candidate(), epochSeqGap, after + 1, limit],
    )) as [string, string, number, string[]] | null
    if (reply === null) return null
    const [head, status, firstSeq, events] = reply
    return { events: events.map((body) => JSON.parse(body) as JobEvent), firstSeq: Number(firstSeq), head: Number(head), status: status as JobStatus }
  }

  async claim(types: readonly string[], now: number, max: number, plan: AppendPlan): Promise<AppendResult[]> {
    this.#connection.usable()
    if (types.length === 0 || max < 1) return []
    await this.#notifications.listeningTo(types.map((type) => this.#keys.queueChannel(type)))
    // One claim at a time from this node: its claimers would only race each other for the same
    // oldest jobs. Across nodes the compare-and-set decides.
    const run = this.#claims.then(() => this.#claimNow(types, now, max, plan))
    this.#claims = run.catch(() => undefined)
    return run
  }

  async expiredLeases(now: number, limit: number): Promise<string[]> {
    return this.#connection.guard(() => this.#connection.client.zrangebyscore(this.#keys.leases, '-inf', `(${now}`, 'LIMIT', 0, limit))
  }

  async dueDeadlines(now: number, limit: number): Promise<string[]> {
    return (await this.#connection.run('due', [this.#keys.deadlines], [now, limit, this.#keys.jobKeyStart])) as string[]
  }

  async queuePosition(jobId: string): Promise<number | null> {
    const reply = (await this.#connection.run('position', [this.#keys.job(jobId)], [this.#keys.prefix, jobId])) as number | null
    return reply === null ? null : Number(reply)
  }

  async putValue(jobId: string, ref: string, json: string): Promise<void> {
    await this.#connection.guard(() => this.#connection.client.hset(this.#keys.values(jobId), ref, json))
  }

  async getValue(jobId: string, ref: string): Promise<string | null> {
    return this.#connection.guard(() => this.#connection.client.hget(this.#keys.values(jobId), ref))
  }

  async deleteValue(jobId: string, ref: string): Promise<void> {
    await this.#connection.guard(() => this.#connection.client.hdel(this.#keys.values(jobId), ref))
  }

  async sweep(now: number): Promise<SweepResult> {
    this.#connection.usable()
    const k = this.#keys
    let expiredJobs = 0
    for (let round = 0; round < 100; round++) {
      const ids = await this.#connection.guard(() => this.#connection.client.zrangebyscore(k.expiry, '-inf', now, 'LIMIT', 0, 200))
      if (ids.length === 0) break
      const deleted = await Promise.all(
        ids.map((id) =>
          this.#connection.run('sweep', [k.job(id), k.log(id), k.expiry, k.jobs, k.leases, k.deadlines, k.values(id), k.text(id), k.input(id), k.items(id)], [id, now, k.prefix]),
        ),
      )
      expiredJobs += deleted.filter((reply) => reply === 1).length
      if (ids.length < 200) break
    }
    return { expiredJobs }
  }

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
        if (kept !== undefined) await this.#notifications.listening(jobId)
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
              for (const event of applied.events) events.push(event)
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
      const failure = this.#connection.translate(error)
      for (const item of group) item.reject(failure)
    }
  }

  /**
   * Picks the oldest ready jobs in one script, then commits up to `max` of them, each under its
   * compare-and-set (the commits leave together, in one script call). The pick reads a few more
   * (`spareClaims`): the next claims of the same types from this node that they cover take those,
   * without a pick of their own, while they are fresh (`spareMs`) — then a busy worker's claim is committed in
   * the same call as the outcomes it carries, one round trip. The compare-and-set catches a spare
   * another node took or changed meanwhile; a job that re-enters a queue through this node drops
   * them all, so it is not passed over. A job another node took is left out; only when every job
   * was lost is a pick tried (again).
   */
  async #claimNow(types: readonly string[], now: number, max: number, plan: AppendPlan): Promise<AppendResult[]> {
    const k = this.#keys
    const keys = types.flatMap((type) => [k.queue(type), k.delayed(type)])
    const at = new Date(now).toISOString()
    const spareKey = types.join('\n')
    const spare = this.#spares.get(spareKey)
    if (spare !== undefined) {
      this.#spares.delete(spareKey)
      // Fresh on the claim's own clock: a job whose backoff ended since the pick must not wait longer.
      // Only when they cover the whole claim: a prefetching worker asks for hundreds, and taking
      // the few left (at most `maxSpares`) sent it straight back for the rest, a claim request more.
      if (now >= spare.at && now - spare.at <= spareMs && spare.records.length >= max) {
        if (spare.records.length > max) this.#spares.set(spareKey, { records: spare.records.slice(max), at: spare.at })
        const claimed = await this.#claimLoaded(spare.records.slice(0, max), plan, at)
        if (claimed.length > 0) return claimed
        // Every one was taken meanwhile: the rest likely too.
        this.#spares.delete(spareKey)
      }
    }
    for (let attempt = 0; ; attempt++) {
      const wanted = max + max * Math.min(spareClaims, Math.floor(maxSpares / max))
      const reply = (await this.#connection.run('pick', keys, [now, k.jobKeyStart, this.#epochs.candidate(), epochSeqGap, k.generation, wanted])) as [
        string,
        ...(string | null)[],
      ][]
      if (reply.length === 0) return []
      const picked = reply.map((one) => parseRecord(one.slice(1) as (string | null)[])).filter((loaded) => loaded !== null && isQueuedForDispatch(loaded.job)) as Loaded[]
      if (picked.length > max) {
        this.#spares.set(spareKey, { records: picked.slice(max), at: now })
        // Sets of types no longer claimed are dropped, oldest first.
        if (this.#spares.size > maxSpareSets) this.#spares.delete(this.#spares.keys().next().value as string)
      }
      const claimed = await this.#claimLoaded(picked.slice(0, max), plan, at)
      if (claimed.length > 0) return claimed
      await this.#backOff(attempt)
    }
  }

  /** Claims jobs as loaded (picked): each committed under its compare-and-set; the ones that landed. */
  async #claimLoaded(records: readonly Loaded[], plan: AppendPlan, at: string): Promise<AppendResult[]> {
    await this.#notifications.listeningTo(records.map((loaded) => this.#keys.jobChannel(loaded.job.id)))
    const committed = await Promise.all(
      records.map(async (loaded): Promise<AppendResult | null> => {
        const applied = applyPlan(loaded.job, loaded.lease, plan, at, loaded.timers)
        const result = { job: applied.job, events: applied.events, lease: applied.lease }
        if (applied.events.length === 0 && !applied.leaseChanged && !applied.timersChanged) return result
        const landed = await this.#commit(loaded, applied.job, applied.lease, applied.availableAt ?? loaded.avail, applied.events, applied.timers)
        return landed ? result : null
      }),
    )
    return committed.filter((result) => result !== null)
  }

  /**
   * Commits `job` computed from `before`; false when another writer got there first. The commits
   * this node issues in one pass of the event loop (a claim's jobs, the writes of the requests read in it) leave
   * together, in one call of lua/commit.lua, each still checked and committed (or refused) on its own.
   */
  #commit(before: Loaded, job: JobState, lease: Lease | null, avail: number, events: readonly JobEvent[], timers: JobTimers): Promise<boolean> {
    const id = job.id
    // Forgotten until this commit is known to have landed: a write that fails or times out may or may not have.
    this.#committed.delete(id)
    // A job back in its queue may be older than the spare claims: they must not pass it over.
    if (this.#spares.size > 0 && isQueuedForDispatch(job) && !isQueuedForDispatch(before.job)) this.#spares.clear()
    const expiresAt = expiryOf(job, this.#retention, timers)
    const bodies = events.map((event) => JSON.stringify(event))
    const ver = String(1 + Math.floor(Math.random() * 2 ** 52))
    const state = storedStateJson(job, before.inputBytes > 0, true)
    // What the compare-and-set finds stored is `before`'s: what is the same as it is sent as
    // `unchanged`, and the script leaves it and its index entries alone. A lease the plan left as it
    // was is the same object (core.applyPlan); timers are compared by their JSON, since every event
    // of a job with deadlines makes a new (often equal) timers object.
    const leaseArg = lease === before.lease ? unchanged : lease === null ? '' : JSON.stringify(lease)
    const leaseExpiry = leaseExpiryOf(lease)
    const [timersJson, timersNext] = timerArgs(timers)
    const timerArgsNow = timers === before.timers || timersJson === timerArgs(before.timers)[0] ? [unchanged, ''] : [timersJson, timersNext]
    const [textOp, text] = textChange(before, job, events)
    // lua/lib/commit.lua's fields in its order, in one string; the script builds the job's keys from its id and type.
    const fields: (string | number)[] = [
      id,
      job.type,
      before.job.status,
      job.status,
      before.ver,
      before.inc,
      // The text lives in its own key (a commit sends what it appends, not the whole text again),
      // the items in theirs (a commit sends the ones it changed), and a large input in its own.
      state,
      job.seq,
      leaseArg,
      // A worker's write renumbers its lease (lastBatch) without moving its expiry.
      leaseExpiry === leaseExpiryOf(before.lease) ? (leaseExpiry === '' ? '' : unchanged) : leaseExpiry,
      avail,
      isQueuedForDispatch(job) ? '1' : '0',
      // Queued before, and whether in a retry backoff (then in the delayed set too: lua/lib/commit.lua).
      isQueuedForDispatch(before.job) ? (before.avail > 0 ? '2' : '1') : '0',
      before.ord,
      // A job that is not finished never expires (core.expiryOf), before or after: nothing to change.
      expiresAt === null ? (isTerminal(before.job.status) ? '' : unchanged) : expiresAt,
      job.seq - this.#retention.maxEventsPerJob + 1,
      ver,
      ...timerArgsNow,
      textOp,
      job.text.length,
      // The script publishes the events as `message` (built there from their JSON): sent once, not twice.
      events.length,
    ]
    for (let i = 0; i < events.length; i++) fields.push((events[i] as JobEvent).seq, bodies[i] as string)
    pushItemChanges(fields, before, job, events)
    const packed = fields.join(fieldSeparator)
    return new Promise<boolean>((resolve, reject) => {
      const landed = (): void => {
        // A finished job is seldom written again (a retry or a restart reads it first): kept, it
        // would only push out a job still being written, and in a busy node its record would live
        // just long enough to be copied into the old generation and die there.
        if (!isTerminal(job.status)) {
          const weights = stateWeights(job, state.length, before.inputBytes, before)
          // Field by field: a spread in an object literal is V8's slow path (docs/architecture.md, "Cross-cutting").
          this.#committed.set(id, {
            job,
            textInState: false,
            itemsInState: false,
            inputBytes: weights.inputBytes,
            itemsBytes: weights.itemsBytes,
            bytes: weights.bytes,
            lease,
            ver,
            inc: before.inc,
            ord: before.ord,
            avail,
            timers,
          })
        }
        if (events.length > 0) this.#notifications.delivered(id, events, bodies)
      }
      // Until it is answered, what the job's channel says may be this commit's echo (notifications.ts).
      this.#notifications.committing(id)
      const settle = (): void => this.#notifications.settled(id)
      if (this.#batch.length === 0) setImmediate(() => this.#sendBatch())
      this.#batch.push({
        fields: packed,
        text,
        landed,
        resolve: (ok) => {
          settle()
          resolve(ok)
        },
        reject: (error) => {
          settle()
          reject(error)
        },
      })
    })
  }

  /** Sends the creates issued in this turn, at most `commitsPerCall` per script call. */
  #sendCreates(): void {
    const creates = this.#creates
    this.#creates = []
    const k = this.#keys
    for (const part of inParts(creates)) {
      const args: string[] = [this.#epochs.candidate(), String(epochSeqGap), k.jobKeyStart, String(part.length)]
      for (const one of part) for (const arg of one.args) args.push(arg)
      this.#connection.run('create', [k.ordinal, k.jobs, k.status('queued'), k.generation, k.deadlines], args).then(
        (reply) => part.forEach((one, i) => one.resolve((reply as (string | number | null)[][])[i] as (string | number | null)[])),
        (error: unknown) => rejectAll(part, error),
      )
    }
  }

  /** Sends the commits issued in this turn, at most `commitsPerCall` per script call. */
  #sendBatch(): void {
    const batch = this.#batch
    this.#batch = []
    const k = this.#keys
    for (const part of inParts(batch)) {
      const args: (string | number)[] = [k.prefix, part.length]
      for (const one of part) args.push(one.fields, one.text)
      this.#connection.run('commit', [k.leases, k.expiry, k.generation, k.deadlines], args).then(
        (reply) => {
          const landed = reply as number[]
          part.forEach((one, i) => {
            if (landed[i] !== 1) return one.resolve(false)
            one.landed()
            one.resolve(true)
          })
        },
        (error: unknown) => rejectAll(part, error),
      )
    }
  }

  /** Waits a little after a lost compare-and-set, more as conflicts repeat; gives up after 100. */
  async #backOff(attempt: number): Promise<void> {
    if (attempt >= 100) throw new JobwireError('unavailable', { reason: 'too many concurrent writers on one job' })
    if (attempt < 2) return
    await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, 2 ** attempt)))
  }

  async #load(id: string): Promise<Loaded | null> {
    this.#connection.usable()
    await this.#notifications.listening(id)
    const reply = (await this.#connection.run('load', [this.#keys.job(id), this.#keys.generation], [this.#epochs.candidate(), epochSeqGap])) as
      | (string | null)[]
      | null
    return reply === null ? null : parseRecord(reply)
  }
}

/** `items` in parts of at most `commitsPerCall`: one script call each. */
function inParts<T>(items: readonly T[]): T[][] {
  const parts: T[][] = []
  for (let from = 0; from < items.length; from += commitsPerCall) parts.push(items.slice(from, from + commitsPerCall))
  return parts
}

function rejectAll(part: readonly { reject: (error: unknown) => void }[], error: unknown): void {
  for (const one of part) one.reject(error)
}

/** The replies of an explicit pipeline, in order; throws the first error among them. */
async function pipelined(pipeline: ChainableCommander): Promise<unknown[]> {
  const replies = (await pipeline.exec()) ?? []
  return replies.map(([error, value]) => {
    if (error !== null) throw error
    return value
  })
}

/** Record fields in the scripts' order: state, seq, ver, lease, avail, inc, ord, status, timers, text, input, items (field, value, … pairs). */
function parseRecord(fields: readonly (string | null | undefined | string[])[]): Loaded | null {
  const [state, seq, ver, lease, avail, inc, ord, , timers, text, input] = fields as (string | null | undefined)[]
  const items = (fields[11] ?? []) as string[]
  if (state === null || state === undefined) return null
  const job = withItems(withText(withInputKeptApart(withSeq(JSON.parse(state) as JobState, seq), input), text), items)
  const weights = stateWeights(job, state.length, input?.length ?? 0)
  return {
    timers: timers === null || timers === undefined ? noTimers : (JSON.parse(timers) as JobTimers),
    job,
    textInState: job.text !== '' && (text === null || text === undefined),
    itemsInState: job.items.length > 0 && items.length === 0,
    inputBytes: weights.inputBytes,
    itemsBytes: weights.itemsBytes,
    bytes: weights.bytes,
    lease: lease === null || lease === undefined ? null : (JSON.parse(lease) as Lease),
    ver: ver ?? '0',
    inc: inc ?? '',
    ord: Number(ord),
    avail: Number(avail ?? 0),
  }
}

/** A stored state (kept without its text, unless written before the text had its own key) with its text. */
function withText(job: JobState, text: string | null | undefined): JobState {
  return job.text === '' && text !== null && text !== undefined && text !== '' ? { ...job, text } : job
}

/**
 * A stored state (kept without its items, unless written before they had their own key) with its
 * items: `pairs` is the items hash as HGETALL gives it (place, JSON, …), in no order.
 */
function withItems(job: JobState, pairs: readonly string[]): JobState {
  if (job.items.length > 0 || pairs.length === 0) return job
  const items = new Array<JobState['items'][number]>(pairs.length / 2)
  for (let i = 0; i < pairs.length; i += 2) items[Number(pairs[i])] = JSON.parse(pairs[i + 1] as string) as JobState['items'][number]
  return { ...job, items }
}

/**
 * The items a commit writes (lua/commit.lua: their number, then place and JSON of each): the ones
 * its events changed, or all of them when the loaded state still carried them (written before the
 * items had a key of their own), which moves them to their key.
 */
function pushItemChanges(args: (string | number)[], before: Loaded, job: JobState, events: readonly JobEvent[]): void {
  if (before.itemsInState) {
    args.push(job.items.length)
    job.items.forEach((item, index) => args.push(index, JSON.stringify(item)))
    return
  }
  const places = changedItemPlaces(job, events) ?? []
  args.push(places.length)
  for (const index of places) args.push(index, JSON.stringify(job.items[index]))
}

/**
 * How a commit changes the text key (lua/commit.lua): append what the batch's chunks add; set it
 * whole after a rewind (a requeue back to a checkpoint) or when the loaded state still carried
 * the text itself (written by an older version), which moves it to its key.
 */
function textChange(before: Loaded, job: JobState, events: readonly JobEvent[]): ['' | 'a' | 's', string] {
  if (before.textInState) return ['s', job.text]
  let appended = ''
  for (const event of events) {
    if (event.type === 'chunk') appended += event.data.text
    else if (event.type === 'requeued' && event.data.textLength !== undefined) return ['s', job.text]
  }
  return appended === '' ? ['', ''] : ['a', appended]
}

/** When a lease lapses, as a script argument: '' when it cannot (none, or ended). */
function leaseExpiryOf(lease: Lease | null): number | '' {
  return lease === null || lease.ended === true ? '' : lease.expiresAt
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

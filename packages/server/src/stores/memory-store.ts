import { applyEvent, JobwireError, type JobEvent, type JobState } from '@jobwire/protocol'
import { applyPlan, createdEvent, decodeCursor, encodeCursor, expiryOf, initialTimers, isQueuedForDispatch, nextDeadline, type AppliedPlan } from '../core/apply.js'
import { defaultRetention } from '../options.js'
import { InProcessStore } from './in-process.js'
import { listedJob } from '../core/store.js'
import { QueueOrder } from './queue-order.js'
import type * as core from '../core/store.js'

interface Entry {
  ordinal: number
  job: JobState
  lease: core.Lease | null
  availableAt: number
  /** The log from `logStart` on; what is before it was trimmed, and is dropped now and then. */
  log: JobEvent[]
  logStart: number
  expiresAt: number | null
  idempotencyKey: string | null
  timers: core.JobTimers
}

/** Everything in process memory: for tests, demos and `jobwire serve --memory`. Lost on exit. */
export class MemoryStore extends InProcessStore implements core.Store {
  readonly kind = 'memory'
  readonly #jobs = new Map<string, Entry>()
  readonly #byKey = new Map<string, string>()
  /** Large values by job, then ref. */
  readonly #values = new Map<string, Map<string, string>>()
  /** Queued dispatched jobs per type, oldest first. */
  readonly #queue = new QueueOrder()
  /** Earliest deadline of each job that has one. */
  readonly #deadlines = new Map<string, number>()
  /**
   * The jobs whose lease is live (held, not ended): what the lease sweep looks through. It went
   * through every job kept, finished ones included (a busy node keeps them for their retention),
   * every second.
   */
  readonly #leased = new Map<string, Entry>()
  readonly #retention: core.Retention
  #ordinal = 0
  #closed = false

  constructor(options: { retention?: core.Retention } = {}) {
    super()
    this.#retention = options.retention ?? defaultRetention
  }

  async createJob(input: core.NewJob): Promise<core.CreateResult> {
    this.#open()
    if (input.idempotencyKey !== null) {
      const existing = this.#byKey.get(input.idempotencyKey)
      const entry = existing === undefined ? undefined : this.#jobs.get(existing)
      if (entry !== undefined) return { job: entry.job, created: false }
    }
    const event = createdEvent(input)
    const job = applyEvent(null, event)
    const entry: Entry = {
      ordinal: ++this.#ordinal,
      job,
      lease: null,
      availableAt: 0,
      log: [event],
      logStart: 0,
      expiresAt: null,
      idempotencyKey: input.idempotencyKey,
      timers: initialTimers(input.deadlines, input.dispatch, Date.parse(input.at)),
    }
    this.#jobs.set(input.id, entry)
    this.#indexDeadline(entry)
    if (input.idempotencyKey !== null) this.#byKey.set(input.idempotencyKey, input.id)
    this.#syncQueue(entry, false)
    this.fanOut.publish(input.id, [event])
    this.fanOut.publishCreated(event)
    return { job, created: true }
  }

  async getJob(id: string): Promise<JobState | null> {
    this.#open()
    return this.#jobs.get(id)?.job ?? null
  }

  async getRecord(id: string): Promise<core.JobRecord | null> {
    this.#open()
    const entry = this.#jobs.get(id)
    return entry === undefined ? null : { job: entry.job, lease: entry.lease, timers: entry.timers }
  }

  async listJobs(query: core.JobQuery): Promise<core.JobPage> {
    this.#open()
    const before = decodeCursor(query.cursor) ?? Infinity
    const matches: Entry[] = []
    for (const entry of this.#jobs.values()) {
      const { job } = entry
      if (entry.ordinal >= before) continue
      if (query.status !== undefined && job.status !== query.status) continue
      if (query.type !== undefined && job.type !== query.type) continue
      if (query.tenant !== undefined && job.owner?.tenant !== query.tenant) continue
      if (query.user !== undefined && job.owner?.user !== query.user) continue
      matches.push(entry)
    }
    matches.sort((a, b) => b.ordinal - a.ordinal)
    const page = matches.slice(0, query.limit)
    const last = page.at(-1)
    return {
      jobs: page.map((entry) => listedJob(entry.job)),
      nextCursor: matches.length > query.limit && last !== undefined ? encodeCursor(last.ordinal) : null,
    }
  }

  async append(jobId: string, plan: core.AppendPlan): Promise<core.AppendResult> {
    this.#open()
    const entry = this.#jobs.get(jobId)
    if (entry === undefined) throw new JobwireError('job_not_found', { jobId })
    return this.#commit(entry, applyPlan(entry.job, entry.lease, plan, new Date().toISOString(), entry.timers))
  }

  async claim(types: readonly string[], now: number, max: number, plan: core.AppendPlan): Promise<core.AppendResult[]> {
    this.#open()
    const claimed: core.AppendResult[] = []
    const at = new Date(now).toISOString()
    // Each commit takes its job out of the queue, so the next look finds the next oldest.
    while (claimed.length < max) {
      const oldest = this.#oldestClaimable(types, now)
      if (oldest === undefined) break
      claimed.push(this.#commit(oldest, applyPlan(oldest.job, oldest.lease, plan, at, oldest.timers)))
      // A plan that left the job queued took nothing: looking again would find it again.
      if (isQueuedForDispatch(oldest.job)) break
    }
    return claimed
  }

  #oldestClaimable(types: readonly string[], now: number): Entry | undefined {
    let oldest: Entry | undefined
    for (const type of types) {
      // The first available one from the head: only jobs in a retry backoff are skipped.
      for (const { ordinal, id } of this.#queue.ids(type)) {
        if (oldest !== undefined && ordinal > oldest.ordinal) break
        const entry = this.#jobs.get(id)
        if (entry !== undefined && entry.availableAt <= now) {
          oldest = entry
          break
        }
      }
    }
    return oldest
  }

  async expiredLeases(now: number, limit: number): Promise<string[]> {
    this.#open()
    const ids: string[] = []
    for (const [id, entry] of this.#leased) {
      if ((entry.lease as core.Lease).expiresAt < now) ids.push(id)
      if (ids.length >= limit) break
    }
    return ids
  }

  async dueDeadlines(now: number, limit: number): Promise<string[]> {
    this.#open()
    const due: [string, number][] = []
    for (const [id, at] of this.#deadlines) if (at <= now) due.push([id, at])
    return due
      .sort((a, b) => a[1] - b[1])
      .slice(0, limit)
      .map(([id]) => id)
  }

  async queuePosition(jobId: string): Promise<number | null> {
    this.#open()
    const entry = this.#jobs.get(jobId)
    if (entry === undefined || !isQueuedForDispatch(entry.job)) return null
    return this.#queue.position(entry.job.type, entry.ordinal)
  }

  async readLog(jobId: string, after: number, limit: number): Promise<core.LogRange | null> {
    this.#open()
    const entry = this.#jobs.get(jobId)
    if (entry === undefined) return null
    const firstSeq = entry.log[entry.logStart]?.seq ?? entry.job.seq + 1
    const start = entry.logStart + Math.max(0, after + 1 - firstSeq)
    return { events: entry.log.slice(start, start + limit), firstSeq, head: entry.job.seq, status: entry.job.status }
  }

  async putValue(jobId: string, ref: string, json: string): Promise<void> {
    this.#open()
    let values = this.#values.get(jobId)
    if (values === undefined) this.#values.set(jobId, (values = new Map()))
    values.set(ref, json)
  }

  async getValue(jobId: string, ref: string): Promise<string | null> {
    this.#open()
    return this.#values.get(jobId)?.get(ref) ?? null
  }

  async deleteValue(jobId: string, ref: string): Promise<void> {
    this.#open()
    this.#values.get(jobId)?.delete(ref)
  }

  async sweep(now: number): Promise<core.SweepResult> {
    let expiredJobs = 0
    for (const [id, entry] of this.#jobs) {
      if (entry.expiresAt === null || entry.expiresAt > now) continue
      this.#jobs.delete(id)
      this.#leased.delete(id)
      this.#deadlines.delete(id)
      this.#values.delete(id)
      if (entry.idempotencyKey !== null) this.#byKey.delete(entry.idempotencyKey)
      expiredJobs++
    }
    return { expiredJobs }
  }

  async ping(): Promise<void> {
    this.#open()
  }

  async close(): Promise<void> {
    this.#closed = true
  }

  #commit(entry: Entry, applied: AppliedPlan): core.AppendResult {
    const { job, events, lease } = applied
    if (events.length === 0 && !applied.leaseChanged && !applied.timersChanged) return { job, events, lease }
    const wasQueued = isQueuedForDispatch(entry.job)
    entry.job = job
    entry.lease = lease
    if (lease !== null && lease.ended !== true) this.#leased.set(job.id, entry)
    else this.#leased.delete(job.id)
    if (applied.timersChanged) {
      entry.timers = applied.timers
      this.#indexDeadline(entry)
    }
    if (applied.availableAt !== undefined) entry.availableAt = applied.availableAt
    if (events.length > 0) {
      entry.log.push(...events)
      const max = this.#retention.maxEventsPerJob
      const excess = entry.log.length - entry.logStart - max
      if (excess > 0) entry.logStart += excess
      // Trimming moves a start index; the array is copied only once it holds as much trimmed as kept.
      if (entry.logStart >= max) {
        entry.log = entry.log.slice(entry.logStart)
        entry.logStart = 0
      }
      entry.expiresAt = expiryOf(job, this.#retention, entry.timers)
    }
    this.#syncQueue(entry, wasQueued)
    this.fanOut.publish(job.id, events)
    return { job, events, lease }
  }

  #indexDeadline(entry: Entry): void {
    const at = nextDeadline(entry.timers)
    if (at === null) this.#deadlines.delete(entry.job.id)
    else this.#deadlines.set(entry.job.id, at)
  }

  /** Keeps the per-type queue in step with the job's status and signals when it changed. */
  #syncQueue(entry: Entry, wasQueued: boolean): void {
    const queued = isQueuedForDispatch(entry.job)
    if (queued === wasQueued) return
    this.#queue.sync(entry.job.type, entry.ordinal, entry.job.id, queued)
    this.fanOut.publishQueue(entry.job.type)
  }

  #open(): void {
    if (this.#closed) throw new JobwireError('unavailable', { reason: 'the store is closed' })
  }
}
